"""Driving video -> SCAIL pose video: detection, whole-body keypoints, NLF 3D joints, camera refit, rendering."""
