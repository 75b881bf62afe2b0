"""The science of ganflow: models, losses, regularisers, metrics. Pure PyTorch, no orchestration imports."""
