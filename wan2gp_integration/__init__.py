"""Everything that touches the SCAIL checkpoint: models, loading, offload, sampler, pipeline."""
