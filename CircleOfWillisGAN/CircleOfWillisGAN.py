"""3D Slicer module: generate Circle of Willis TOF-MRA volumes with a 3D StyleGAN2 and explore them.

The panel's behaviour lives in CircleOfWillisGANLib (panel_controller, panel_engine, slicer_scene); this file
only loads the .ui, checks and installs dependencies, keeps the parameter node and holds the self-test.
"""

import importlib.util
import json
import logging
import os
import sys
import unittest

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# Developer mode (<repo>/CircleOfWillisGAN on the module path): the library and Resources/ sit one level up.
_HERE = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(_HERE, "CircleOfWillisGANLib")) and os.path.isdir(os.path.join(_HERE, "..", "CircleOfWillisGANLib")):
    sys.path.insert(0, os.path.normpath(os.path.join(_HERE, "..")))
RESOURCES = os.path.join(_HERE, "Resources")
if not os.path.isdir(RESOURCES):
    RESOURCES = os.path.normpath(os.path.join(_HERE, "..", "Resources"))
PIP_PACKAGES = {"safetensors": "safetensors>=0.4", "nibabel": "nibabel>=4", "PIL": "pillow>=9", "tqdm": "tqdm>=4.60"}
STATE_PARAMETER = "PanelState"
PANEL_SECTIONS = ("modelGroupBox", "generationGroupBox", "directionsGroupBox", "styleMixingGroupBox",
                  "interpolationGroupBox", "surfaceGroupBox", "exportGroupBox")


class CircleOfWillisGAN(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        icon = os.path.join(RESOURCES, "Icons", "CircleOfWillisGAN.png")
        if os.path.isfile(icon):  # Slicer looks beside this file only: in developer mode Resources/ is one level up
            parent.icon = qt.QIcon(icon)
        parent.title = "Circle of Willis GAN"
        parent.categories = ["Image Synthesis"]
        parent.dependencies = []
        parent.contributors = ["CircleOfWillisGAN contributors"]
        parent.helpText = ("Generate synthetic TOF-MRA volumes of the Circle of Willis with a 3D StyleGAN2: choose a seed, "
                           "truncation, latent directions, style mixing or an interpolation, and see each volume as slices, "
                           "a 3D MIP and a vessel surface. Synthetic images are for research, not for diagnosis.")
        parent.acknowledgementText = "Reimplements and extends the 3D StyleGAN of Aydin et al., NeuroImage 2024."


class CircleOfWillisGANWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.controller = None
        self.raterController = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        panel = slicer.util.loadUI(os.path.join(RESOURCES, "UI", "CircleOfWillisGAN.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        self.logic = CircleOfWillisGANLogic()
        self.ui.installDependenciesButton.clicked.connect(self.onInstallDependencies)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneImported)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneClosing)
        missing = self.logic.missingPackages()
        if missing:
            self.ui.dependenciesGroupBox.setVisible(True)
            self.ui.dependenciesLabel.text = ("This module needs " + ", ".join(missing) + ". Press Install: PyTorch comes "
                                              "from the PyTorch extension, the others from pip. Nothing is installed without asking.")
            for name in PANEL_SECTIONS:
                getattr(self.ui, name).setEnabled(False)
        else:
            self.startPanel()

    def startPanel(self):
        from CircleOfWillisGANLib.panel_controller import PanelController
        from CircleOfWillisGANLib.slicer_scene import SlicerScene

        self.ui.dependenciesGroupBox.setVisible(False)
        self.ui.modelGroupBox.setEnabled(True)  # the controller enables the other sections once a model is loaded
        self.scene = SlicerScene(slicer)
        self.controller = PanelController(self.ui, qt, show_error=slicer.util.errorDisplay, host_holds_gil=True)
        self.controller.views.append(lambda r: self.scene.show(r.volume, r.affine, r.surface))
        self.controller.state_listeners.append(self.logic.saveState)
        saved = self.logic.loadState()
        if saved:
            self.controller.restore_state(saved)
        else:
            self.controller.load_model("demo", quiet=True)
        self.ui.projectCurrentVolumeButton.visible = True
        self.projectCurrentVolumeText = self.ui.projectCurrentVolumeButton.text  # the .ui's, put back after a projection
        self.ui.projectCurrentVolumeButton.clicked.connect(self.onProjectCurrentVolume)
        self.controller.projection_listeners.append(self.onProjectionEnded)
        self.addTuringSections()

    def onProjectCurrentVolume(self):
        """Export the volume shown in the Red slice view (in world coordinates) to a temporary NIfTI and project it
        with the panel's controller; exporting, unlike saving, leaves the node's own storage (its file for scene
        saves) untouched."""
        import re
        import tempfile

        if self.controller.projecting:  # the button cancels the running projection
            self.controller.project_volume()
            return
        node = self.shownVolume()
        if node is None:
            slicer.util.errorDisplay("No volume is shown: load or select a TOF-MRA volume, then press Project again.")
            return
        volumeId = node.GetID()
        self.removeProjectionCopy()
        self.projectionCopy = tempfile.mkdtemp(prefix="CircleOfWillisGAN-")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", node.GetName() or volumeId)
        path = os.path.join(self.projectionCopy, name + ".nii.gz")
        try:  # a new properties dict each time: Slicer keeps changes to its default's
            written = slicer.util.exportNode(node, path, {}, world=True)
        except ValueError:  # no NIfTI writer for this kind of volume (tensor and other non-scalar volumes)
            self.removeProjectionCopy()
            slicer.util.errorDisplay(f"{node.GetName()} cannot be written as NIfTI, so it cannot be projected: show "
                                     "the grey TOF-MRA volume in the Red view, then press Project again.")
            return
        if not written:
            self.removeProjectionCopy()
            slicer.util.errorDisplay(f"Could not write the volume to {path} for projection: check free space in the "
                                     "temporary folder (details in the Python console's log).")
            return
        try:
            self.controller.project_volume(path, source=self.projectionSource(node, path))
        finally:  # refused (a model still loading, no export folder) or failed: no projection will delete the copy
            if not self.controller.projecting:
                self.removeProjectionCopy()
        if self.controller.projecting:  # the same button cancels it, as the panel's Project volume... does
            self.ui.projectCurrentVolumeButton.setText("Cancel projection")

    def projectionSource(self, node, copy):
        """What the projection of `node` records as its scan, and its folder is kept for (the copy's path changes with
        every press): the file the node was read from while it is unchanged and untransformed since, else its name and
        the exported copy's checksum."""
        from CircleOfWillisGANLib.projection_io import exported_scan_source

        storage = node.GetStorageNode()
        fileName = storage.GetFileName() if storage is not None else ""
        if fileName and not node.GetModifiedSinceRead() and node.GetParentTransformNode() is None:
            return fileName
        return exported_scan_source(node.GetName() or node.GetID(), copy)

    def onProjectionEnded(self):
        """However a projection ends: the patient's data leaves the temp folder and the button projects again."""
        self.removeProjectionCopy()
        self.ui.projectCurrentVolumeButton.setText(self.projectCurrentVolumeText)

    def shownVolume(self):
        """The volume in the Red slice view's background, else the active volume; None when there is neither."""
        red = slicer.app.layoutManager().sliceWidget("Red")
        volumeId = red.mrmlSliceCompositeNode().GetBackgroundVolumeID() if red is not None else None
        volumeId = volumeId or slicer.app.applicationLogic().GetSelectionNode().GetActiveVolumeID()
        return slicer.mrmlScene.GetNodeByID(volumeId) if volumeId else None

    def removeProjectionCopy(self):
        """Delete the temporary copy of the last projected scan (patient data is not left in the temp folder)."""
        import shutil

        if getattr(self, "projectionCopy", None):
            shutil.rmtree(self.projectionCopy, ignore_errors=True)
            self.projectionCopy = None

    def addTuringSections(self):
        """The visual Turing test: the rater panel (cases shown in Slicer's views) and the organiser panel."""
        from CircleOfWillisGANLib.turing.organiser_panel import OrganiserPanelController
        from CircleOfWillisGANLib.turing.rater_panel import RaterPanelController
        from CircleOfWillisGANLib.turing.slicer_viewer import SlicerCaseViewer

        _, rater = self.addCollapsibleSection("Visual Turing test: rater", os.path.join(RESOURCES, "UI", "TuringRater.ui"))
        self.caseViewer = SlicerCaseViewer(slicer)
        self.raterController = RaterPanelController(rater, qt, viewer=self.caseViewer)
        organiserSection, organiser = self.addCollapsibleSection(
            "Visual Turing test: organiser", os.path.join(RESOURCES, "UI", "TuringOrganiser.ui"))
        self.generatingWidgets = [getattr(self.ui, name) for name in PANEL_SECTIONS] + [
            self.ui.projectCurrentVolumeButton, organiserSection]
        self.raterController.rating_listeners.append(self.onRating)
        self.organiserController = OrganiserPanelController(organiser, qt, process_events=slicer.app.processEvents)
        self.controller.engine_listeners.append(
            lambda engine: self.organiserController.use_generator(engine.generator, engine.generator.source or "demo"))

    def onRating(self, rating):
        """While a rater rates, the panel can neither generate nor draw: its sections are hidden, playback stops and its
        volume and vessels are hidden, so the case is seen alone; afterwards they come back with the panel's state."""
        for widget in self.generatingWidgets:
            widget.setVisible(not rating)
        self.controller.suspend_views(rating)
        self.scene.set_hidden(rating)

    def addCollapsibleSection(self, title, uiPath):
        """A collapsed section at the bottom of the panel holding the .ui at `uiPath`; returns the section and the
        .ui's widgets by name."""
        section = ctk.ctkCollapsibleButton()
        section.text = title
        section.collapsed = True
        self.layout.addWidget(section)
        panel = slicer.util.loadUI(uiPath)
        qt.QVBoxLayout(section).addWidget(panel)
        return section, slicer.util.childWidgetVariables(panel)

    def onInstallDependencies(self):
        cpuOnly = self.ui.torchBackendComboBox.currentIndex == 1
        try:
            installed = self.logic.installDependencies(cpuOnly)
        except Exception as exc:  # pip and PyTorchUtils raise many kinds (CalledProcessError, OSError, ...)
            slicer.util.errorDisplay(f"Installing the dependencies failed ({exc}): check the network connection and "
                                     "the Python console's log, then press Install again.")
            return
        if installed:
            self.startPanel()

    def onSceneImported(self, caller, event):
        if self.controller is None:  # dependencies missing: the panel (and the state's library) is not running
            return
        saved = self.logic.loadState()
        if saved is not None:
            self.controller.restore_state(saved)

    def onSceneClosing(self, caller, event):
        self.closeRating()

    def closeRating(self):
        """Release the rater's journal, remove the case on show and restore the views' settings."""
        if self.raterController is not None:
            self.raterController.close()  # closes the case viewer too

    def cleanup(self):
        self.removeObservers()
        if self.controller is not None:
            self.controller.close()  # first: it cancels a projection that may still read the scan's copy
        self.removeProjectionCopy()
        self.closeRating()  # before the scene: each restores the view settings it found, so undo in reverse order
        if getattr(self, "scene", None) is not None:
            self.scene.close()


class CircleOfWillisGANLogic(ScriptedLoadableModuleLogic):
    """Dependencies and the parameter node; generation itself is CircleOfWillisGANLib.panel_engine."""

    def missingPackages(self):
        missing = [] if importlib.util.find_spec("torch") else ["PyTorch"]
        return missing + [pip for module, pip in PIP_PACKAGES.items() if importlib.util.find_spec(module) is None]

    def installDependencies(self, cpuOnly=False):
        """Install what is missing after one confirmation: torch through PyTorchUtils, the rest through pip."""
        missing = self.missingPackages()
        if not missing or not slicer.util.confirmOkCancelDisplay("Install " + ", ".join(missing) + "? This can take minutes."):
            return not missing
        if "PyTorch" in missing:
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay("Install the PyTorch extension from the Extension Manager, restart Slicer, then press Install again.")
                return False
            with slicer.util.WaitCursor():
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, forceComputationBackend="cpu" if cpuOnly else None, torchVersionRequirement=">=2.1")
            if torch is None:
                return False
        packages = [p for p in missing if p != "PyTorch"]
        if packages:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(" ".join(packages))
        importlib.invalidate_caches()  # else find_spec may not see what was just installed
        still = self.missingPackages()
        if still:
            slicer.util.errorDisplay("Still missing after installing: " + ", ".join(still) + ". Restart Slicer and "
                                     "open the module again.")
        return not still

    def saveState(self, state):
        self.getParameterNode().SetParameter(STATE_PARAMETER, json.dumps(state))

    def loadState(self):
        from CircleOfWillisGANLib.panel_engine import PanelState

        text = self.getParameterNode().GetParameter(STATE_PARAMETER)
        try:
            return PanelState.from_dict(json.loads(text)).validated() if text else None
        except (ValueError, TypeError) as exc:  # InputError is a ValueError: a hand-edited or damaged state
            logging.warning("CircleOfWillisGAN: ignoring an unreadable saved panel state (%s)", exc)
            return None


class CircleOfWillisGANTest(ScriptedLoadableModuleTest):
    """The module's panel, load a model -> generate -> MIP -> surface -> export, and the Turing viewer, inside Slicer."""

    def runTest(self):
        missing = CircleOfWillisGANLogic().missingPackages()
        if missing:  # Slicer's build machines have no torch: say so rather than fail
            self.delayDisplay("Skipped: the module needs " + ", ".join(missing) + " (press Install in its panel)")
            return
        slicer.mrmlScene.Clear()
        try:
            self.test_panel()
        except unittest.SkipTest as exc:  # ctest's runner reports a skip itself; Reload and Test shows it here
            self.delayDisplay(f"Skipped the panel test: {exc}")
        slicer.mrmlScene.Clear()
        self.test_generate_show_export()
        slicer.mrmlScene.Clear()
        self.test_turing_case_viewer()

    def needDependencies(self):
        missing = CircleOfWillisGANLogic().missingPackages()
        if missing:
            self.skipTest("the module needs " + ", ".join(missing))

    def test_panel(self):
        """The module's own panel under PythonQt: the bundled demo model loads, a new seed renders a new volume
        into the scene, and the parameter node keeps the panel's state."""
        import time

        import numpy as np

        from CircleOfWillisGANLib.errors import CheckpointError
        from CircleOfWillisGANLib.resources import demo_model_path

        self.needDependencies()
        try:
            demo_model_path()
        except CheckpointError as exc:  # an extension built without the demo weights
            self.skipTest(str(exc))
        self.delayDisplay("Loading the demo model into the module's panel")
        widget = slicer.util.getModuleWidget("CircleOfWillisGAN")
        controller = widget.controller
        deadline = time.monotonic() + 300
        while controller.engine is None and time.monotonic() < deadline:
            controller.wait_idle(timeout_s=1.0, app=slicer.app)
        self.assertIsNotNone(controller.engine, "the demo model did not load")
        controller.render_now()  # the scene was cleared: the panel shows its volume again
        self.assertTrue(controller.wait_idle(timeout_s=120, app=slicer.app))
        self.assertIsNotNone(widget.scene.volume_node.GetScene())
        before = slicer.util.arrayFromVolume(widget.scene.volume_node).copy()
        seed = int(widget.ui.seedSpinBox.value) % 1000 + 1
        widget.ui.seedSpinBox.value = seed
        controller.render_now()
        self.assertTrue(controller.wait_idle(timeout_s=120, app=slicer.app))
        self.assertFalse(np.array_equal(before, slicer.util.arrayFromVolume(widget.scene.volume_node)))
        state = json.loads(widget.logic.getParameterNode().GetParameter(STATE_PARAMETER))
        self.assertEqual(state["seed"], seed)
        self.delayDisplay("Test passed")

    def test_generate_show_export(self):
        import tempfile

        import numpy as np
        import vtk

        from CircleOfWillisGANLib.generator import build_generator
        from CircleOfWillisGANLib.panel_engine import PanelEngine, PanelState
        from CircleOfWillisGANLib.slicer_scene import SlicerScene

        self.needDependencies()
        self.delayDisplay("Generating with a random tiny model")
        engine = PanelEngine(build_generator("tiny", seed=0, device="cpu"))
        state = PanelState(seed=3, psi=0.7)
        result = engine.render(state)
        self.assertEqual(result.volume.shape, engine.generator.arch.output_shape)
        self.assertGreater(result.surface.GetNumberOfPoints(), 0)
        scene = SlicerScene(slicer)
        try:
            scene.show(engine.render(PanelState(seed=4)).volume, result.affine, result.surface)
            scene.show(result.volume, result.affine, result.surface)
            self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")), 1)
            self.assertTrue(scene.vr_display.GetVisibility())
            for view in slicer.util.getNodesByClass("vtkMRMLViewNode"):
                self.assertEqual(view.GetRaycastTechnique(), slicer.vtkMRMLViewNode.MaximumIntensityProjection)
            with tempfile.TemporaryDirectory() as folder:
                paths = engine.export_volume(state, folder)
                self.assertTrue(all(os.path.isfile(p) for p in paths.values()))
                # the volume shown lies voxel for voxel where Slicer's own reader puts the exported NIfTI
                exported = slicer.util.loadVolume(str(paths["volume"]), {"show": False})
                shown_matrix, exported_matrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
                scene.volume_node.GetIJKToRASMatrix(shown_matrix)
                exported.GetIJKToRASMatrix(exported_matrix)
                np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(shown_matrix),
                                           slicer.util.arrayFromVTKMatrix(exported_matrix), atol=1e-4)
                np.testing.assert_allclose(slicer.util.arrayFromVolume(scene.volume_node),
                                           slicer.util.arrayFromVolume(exported), atol=1e-6)
                slicer.mrmlScene.RemoveNode(exported)
        finally:
            scene.close()  # gives the 3D views their ray casting back
        self.delayDisplay("Test passed")

    def test_turing_case_viewer(self):
        import tempfile

        import numpy as np

        from CircleOfWillisGANLib.turing.slicer_viewer import SlicerCaseViewer
        from CircleOfWillisGANLib.volume_io import default_affine, save_volume

        self.needDependencies()
        self.delayDisplay("Showing a Turing case in every display")
        volume = np.full((16, 32, 32), 20.0)
        volume[:, 12:18, :] = volume[:, :, 14:20] = 230.0
        other = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLModelNode", "Not part of the study")
        other.CreateDefaultDisplayNodes()
        viewer = SlicerCaseViewer(slicer)

        def shown():
            nodes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") + slicer.util.getNodesByClass("vtkMRMLModelNode")
            return sorted(n.GetName() for n in nodes if n.GetName().startswith("Turing"))

        try:
            with tempfile.TemporaryDirectory() as folder:
                path = save_volume(os.path.join(folder, "case-001.nii"), volume, default_affine(volume.shape), np.uint8)
                for display, names in (("mip", ["Turing case"]), ("slices", ["Turing case"]),
                                       ("surface", ["Turing case", "Turing surface"]),
                                       ("all", ["Turing case", "Turing surface"])):
                    viewer.show_case(path, display)
                    self.assertEqual(shown(), names)
                    self.assertFalse(other.GetDisplayNode().GetVisibility(), "another node is shown beside the case")
            viewer.hide_case()
            self.assertEqual(shown(), [])
        finally:
            viewer.close()  # gives back the annotations, ray casting and the other nodes' visibility
        self.assertTrue(other.GetDisplayNode().GetVisibility())
        self.delayDisplay("Test passed")
