"""Runs a built model: what both the build (its self-check and quality command) and the server's engine
need, so that neither imports the other. The build writes artifacts; this reads them.

- model.py: a model's CPU library and verified weights in this process, its paged KV cache, prefill and
  decode (TVM's runtime only).
- chat.py: the model's chat template, rendered as Hugging Face renders it.

Importing the package imports neither TVM nor the build; model.py imports TVM.
"""
