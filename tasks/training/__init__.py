"""Training: the loop, the flow teacher, pseudo-labels, the RGB students and fine-tuning."""
