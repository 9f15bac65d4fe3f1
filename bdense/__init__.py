"""bdense: few-step diffusion students by distillation (SFD, progressive distillation) with B-DENSE branches."""

__version__ = "0.1.0"
