"""Positive mining and pseudo labels: ISR frame matching, DomainMix clusters;
and training-data search: SnP (`snp`, `selection`)."""
