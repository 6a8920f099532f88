"""Training domain code (no Dagster): EDM in v-form, stage UNets and their inflation,
micro-conditioning. See SPEC.md section 3."""
