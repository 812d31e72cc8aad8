"""The face regions every part of the project names: eyes (with irises), mouth and face oval.

One name set (left_eye, right_eye, mouth, face_oval) for both landmark schemes the project has: MediaPipe's
478-point face mesh (`MEDIAPIPE_REGIONS`, indices into a FaceLandmarker's landmarks) and SynthHeads' 49 rendered
landmarks (`dex_jax.data.synth_face.REGIONS`, no face oval). `MASKED_REGIONS` are the regions the pose input covers
(paper Fig. 3) and the expression mask marks. Datasets record their scheme's dict in `info.metadata['landmark_groups']`.
"""

from mediapipe.tasks.python.vision import FaceLandmarksConnections as _MESH

MASKED_REGIONS = ("left_eye", "right_eye", "mouth")


def _indices(connections):
    return sorted({point for edge in connections for point in (edge.start, edge.end)})


MEDIAPIPE_REGIONS = {
    "left_eye": _indices(_MESH.FACE_LANDMARKS_LEFT_EYE) + _indices(_MESH.FACE_LANDMARKS_LEFT_IRIS),
    "right_eye": _indices(_MESH.FACE_LANDMARKS_RIGHT_EYE) + _indices(_MESH.FACE_LANDMARKS_RIGHT_IRIS),
    "mouth": _indices(_MESH.FACE_LANDMARKS_LIPS),
    "face_oval": _indices(_MESH.FACE_LANDMARKS_FACE_OVAL),
}


def masked_groups(regions):
    """The index lists of MASKED_REGIONS in a scheme's region dict, in that order."""
    return [list(regions[name]) for name in MASKED_REGIONS]
