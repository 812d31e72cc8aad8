"""Face analysis shared by data, training and evaluation: MediaPipe landmarks, head pose, regions, ArcFace."""
