"""Training small models from scratch on the CPU: the embedded demo checkpoint (``demo_model``) and reusable parts
(procedural data, time-budgeted loops, checkpoints, single-file export, an OpenCV judge) for later trainers."""
