"""Rigid registration of a TOF-MRA volume to a template: Mattes mutual information, three resolutions."""

from __future__ import annotations

from typing import Any, Tuple

SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_MM = (2.0, 1.0, 0.0)


def register_rigid(fixed: Any, moving: Any, seed: int = 0) -> Tuple[Any, float]:
    """The 6-dof transform mapping template (fixed) points to volume (moving) points, and the final metric.

    Runs on one thread: ITK's random metric sampling depends on the thread count, and volumes are already
    prepared in parallel processes, so one thread keeps the result identical for a seed on any machine.
    """
    import SimpleITK as sitk

    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed + 1)  # ITK takes seed 0 for the wall clock: every run would differ
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200,
                                                    relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    method.SetNumberOfThreads(1)
    transform = method.Execute(fixed, moving)
    return transform, float(method.GetMetricValue())
