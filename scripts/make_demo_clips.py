"""Write the built-in clips of ``avsl-edge demo`` (``avsl_edge/demo/``): short SynthMUSIC v1 videos
with their sound, and ``clips.json``, what each clip shows and what is heard in it.

    python scripts/make_demo_clips.py            # -> avsl_edge/demo/*.mp4, clips.json

The clips are the training distribution (v1 art and sounds, seeds far from every split's), so the
demo shows the model where it works; the model card says how it does elsewhere. Torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402

from avsl_edge.fileio import atomic_dir  # noqa: E402
from avsl_edge.media import write_video  # noqa: E402
from training.data.synth import SynthMusic  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "avsl_edge" / "demo"
SECONDS, FPS = 3.0, 15.0
# (file stem, scene kind, seed): three solos, a solo with a silent distractor, a duet, off-screen sound
CLIPS = (("solo_a", "solo", 900001), ("solo_b", "solo", 900002), ("solo_c", "solo", 900010),
         ("distractor", "solo_distractor", 900003), ("duet", "duet", 900004), ("offscreen", "offscreen", 900006))


def main() -> int:
    synth = SynthMusic()
    index = []
    with atomic_dir(OUT) as tmp:
        for stem, kind, seed in CLIPS:
            v = synth.render_video(kind, seed, SECONDS, FPS)
            write_video(tmp / f"{stem}.mp4", v.frames, FPS, audio=v.audio, sample_rate=synth.config.sample_rate)
            shown = sorted({o.category for o in v.objects[0]})
            index.append({"file": f"{stem}.mp4", "kind": kind, "seed": seed, "shown": shown,
                          "heard": sorted(v.audio_classes),
                          "heard_in_view": sorted(set(v.audio_classes) & set(shown))})
            print(f"{stem}.mp4: {kind}, shows {', '.join(shown)}; heard {', '.join(v.audio_classes)}")
        (tmp / "clips.json").write_text(json.dumps({"seconds": SECONDS, "fps": FPS, "clips": index}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
