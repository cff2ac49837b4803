"""AFNO lab: Adaptive Fourier Neural Operator models, Navier–Stokes data, training, rollout plots (Atelier extension).

Core modules (model, navier_stokes, dataset, forecaster, training, checkpoint, plots) use only torch and the standard
library; lab_jobs, api, ui and integration connect them to Atelier's job queue, HTTP server and Gradio page.
"""
