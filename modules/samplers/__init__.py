"""Sampling: k-diffusion-style samplers, noise schedulers, per-image noise and A1111's sampler table.

``denoiser`` wraps a UNet as ``D(x, sigma) -> x0``; ``kdiffusion``/``kdiffusion_sde`` are the sampler functions;
``schedulers`` builds sigma schedules; ``noise`` gives per-image seeded noise; ``registry`` maps A1111's names to all
of these (``timesteps`` adds DDIM, PLMS, UniPC). Nothing here imports the UI, the API or ``modules.shared``.
"""
