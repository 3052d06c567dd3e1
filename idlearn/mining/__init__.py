"""Positive mining and pseudo labels: ISR frame matching, DomainMix clusters,
the CaCL camera curriculum (`curriculum`); and training-data search: SnP
(`snp`, `selection`)."""
