"""Draw data/astronaut_still.png: a real photo (scikit-image's astronaut, 512x512, in a 1100x700 grey frame) animated
by the bundled Stage-1 model with paste-back, as `dex-portrait animate` does (relative motion, the bundled driving
clip).

Top row: the source at full frame. Below, for two driving frames: the driving frame | the result at the source's
full 1100x700 frame. Panels are shrunk by --scale and the PNG holds 256 colours, which keeps it small. Prints how
far the result departs from the source outside the paste-back mask (zero: those pixels are the source's).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

from dex_jax.data.video_io import stream_clip
from dex_jax.face.landmarker import FaceLandmarker
from dex_jax.infer.animate import DEFAULTS
from dex_jax.infer.faces import MAX_FACES, find_faces
from dex_jax.infer.paste_back import paste_mask
from dex_jax.infer.pipeline import load_pipeline, track

HEIGHT, WIDTH, GREY = 700, 1100, 128
PICKS = (25, 60)


def framed_astronaut():
    frame = np.full((HEIGHT, WIDTH, 3), GREY, np.uint8)
    y, x = (HEIGHT - 512) // 2, (WIDTH - 512) // 2
    frame[y:y + 512, x:x + 512] = data.astronaut()
    return frame


def shrink(image, scale):
    h, w = image.shape[:2]
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=Path("data/astronaut_still.png"), type=Path)
    parser.add_argument("--scale", default=0.4, type=float, help="panel scale (default: %(default)s)")
    args = parser.parse_args()
    source = framed_astronaut()
    with FaceLandmarker(num_faces=MAX_FACES) as landmarker:
        pipeline = load_pipeline(DEFAULTS["checkpoint"], landmarker)
        face = pipeline.source_face(source, find_faces(landmarker, source)[0])
        driving = track(landmarker, stream_clip(DEFAULTS["driving"]), "driving clip", pipeline.framing)
        outputs = list(pipeline.animate(source, [face], driving, stream_clip(DEFAULTS["driving"])))
    mask = paste_mask(face.box, (0, 0, WIDTH, HEIGHT))
    outside = max(int(np.abs(result.astype(int) - source)[mask == 0].max()) for _, _, result in outputs)
    print(f"{len(outputs)} frames at {WIDTH}x{HEIGHT}; max |result - source| outside the mask: {outside}; "
          f"mask box (cx, cy, side) = {np.round(face.box, 1).tolist()}")
    rows = []
    for pick in PICKS:
        driving_frame, _, result = outputs[pick]
        side = round(HEIGHT * args.scale)
        rows.append(np.concatenate([cv2.resize(driving_frame, (side, side), interpolation=cv2.INTER_AREA),
                                    shrink(result, args.scale)], axis=1))
    top = np.concatenate([np.full((round(HEIGHT * args.scale), rows[0].shape[1] - round(WIDTH * args.scale), 3),
                                  255, np.uint8), shrink(source, args.scale)], axis=1)
    Image.fromarray(np.concatenate([top, *rows], axis=0)).quantize(256).save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
