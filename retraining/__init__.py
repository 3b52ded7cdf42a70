"""Retraining the generation model on what the community liked: LoRA fine-tuning on a
filtered image set (``sft``), on the community's choices (``dpo``) or ratings (``kto``)."""
