"""Evaluation: metrics, features, the evaluate stage, report, plots and Grad-CAM."""
