"""Code generation: fused kernels rendered from Jinja2 templates to C (and CUDA), one template set for both."""
