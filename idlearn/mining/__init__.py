"""Positive mining and pseudo labels: ISR frame matching, DomainMix clusters."""
