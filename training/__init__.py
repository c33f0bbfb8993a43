"""Training package: dataset preparation, 3D StyleGAN2 training (single GPU, DDP, CPU), resume, export.

It builds on CircleOfWillisGANLib and is never imported by it or by 3D Slicer.
"""
