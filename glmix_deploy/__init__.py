"""glmix-deploy: deployment toolchain for GLNet / GLMix vision backbones."""

__version__ = "0.1.0"
