"""The one train loop, its state, sharding and checkpointing."""
