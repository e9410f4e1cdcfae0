"""LITA 1.5's frames are padded to squares, not cropped: ``image_aspect_ratio: pad`` as in NeMo's
LITA config, i.e. LLaVA's ``expand2square`` (llava/mm_utils.py: paste the image centred on a
square of side max(W, H) filled with ``tuple(int(x * 255) for x in image_processor.image_mean)``,
then the CLIP processor resizes that square). LITA 1.0 keeps CLIP's shortest-side resize and
centre crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lita_serve.config import LitaConfig
from lita_serve.preprocess.frame_sampling import frame_indices, pad_chw, pad_color
from lita_serve.preprocess.video import sample_video
from videos import make_mp4

MEAN = LitaConfig().vision.image_mean
STD = LitaConfig().vision.image_std


def _wide_frame(i: int) -> np.ndarray:
    frame = np.zeros((90, 160, 3), np.uint8)  # 16:9, left half red, right half blue
    frame[:, :80] = (220, 30, 30)
    frame[:, 80:] = (30, 30, 220)
    return frame


@pytest.fixture(scope="module")
def wide_video(tmp_path_factory) -> Path:
    return make_mp4(tmp_path_factory.mktemp("aspect") / "wide.mp4", seconds=1.0, fps=10, size=(160, 90),
                    frame_fn=_wide_frame)


def _expand2square_reference(path: Path, n: int, size: int) -> np.ndarray:
    """LLaVA's recipe on full-resolution frames: expand2square with the mean colour, resize (PIL bicubic)."""
    import av

    with av.open(str(path)) as container:
        full = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    out = []
    for i in frame_indices(len(full), n):
        img = Image.fromarray(full[i])
        side = max(img.size)
        square = Image.new("RGB", (side, side), pad_color(MEAN))
        square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        out.append(np.asarray(square.resize((size, size), Image.BICUBIC)).transpose(2, 0, 1))
    return np.stack(out)  # uint8 [F, 3, S, S]


def test_pad_chw_centres_the_frame_on_the_mean_colour():
    frames = np.full((2, 3, 4, 3), 200, np.uint8)  # [F, H=3, W=4, 3]
    out = pad_chw(frames, 4, (10, 20, 30))
    assert out.shape == (2, 3, 4, 4)
    assert (out[:, :, 0:3, :] == 200).all() or (out[:, :, 1:4, :] == 200).all()
    assert pad_color(MEAN) == (122, 116, 104)


def test_padded_frames_match_llava_expand2square(wide_video):
    padded = sample_video(wide_video, 4, 112, MEAN, STD, normalize=False, image_aspect_ratio="pad").frames
    reference = _expand2square_reference(wide_video, 4, 112)
    assert padded.shape == reference.shape == (4, 3, 112, 112)
    diff = np.abs(padded.astype(np.int16) - reference.astype(np.int16))
    assert diff.mean() < 3.0, diff.mean()
    # bands of the mean colour above and below the 16:9 picture; both halves of the picture kept
    band = padded[:, :, :20, :]
    assert (np.abs(band.astype(np.int16) - np.array(pad_color(MEAN), np.int16).reshape(1, 3, 1, 1)) <= 1).all()
    middle = padded[:, :, 56, :]
    assert middle[:, 0, 10].min() > 180 and middle[:, 2, 100].min() > 180  # red left, blue right
    cropped = sample_video(wide_video, 4, 112, MEAN, STD, normalize=False).frames
    assert np.abs(cropped[:, :, :20, :].astype(np.int16) - band.astype(np.int16)).mean() > 50  # no bands


def test_version_defaults_and_explicit_settings():
    """The 1.5 preset pads, 1.0 crops, and a lita.json from before the option loads as it was served."""
    assert LitaConfig.from_name("lita-1.5-13b").lita.image_aspect_ratio == "pad"
    assert LitaConfig.from_name("lita-13b").lita.image_aspect_ratio == "square"
    old = LitaConfig.from_dict({"name": "old", "lita": {"lita_version": "1.0"}})  # a lita.json from before
    assert old.lita.image_aspect_ratio == "square"


def test_hf_reader_picks_the_aspect_ratio():
    from lita_build.checkpoint import hf_config

    def lita_of(extra):
        used: list[str] = []
        hf = {"num_time_tokens": 100, "mm_hidden_size": 1024, **extra}
        return hf_config._lita(hf, used), used

    opts, used = lita_of({"lita_version": "1.5"})
    assert opts.image_aspect_ratio == "pad" and any("image_aspect_ratio='pad'" in u for u in used)
    assert lita_of({"lita_version": "1.0"})[0].image_aspect_ratio == "square"
    assert lita_of({"lita_version": "1.5", "image_aspect_ratio": "square"})[0].image_aspect_ratio == "square"


def test_served_config_samples_with_its_aspect_ratio(wide_video):
    from lita_serve.preprocess.video import sample_video_for

    cfg = LitaConfig.from_name("tiny")
    cfg.lita.image_aspect_ratio = "pad"
    frames = sample_video_for(wide_video, cfg, normalize=False).frames
    s = cfg.vision.image_size
    assert frames.shape == (cfg.lita.sample_frames, 3, s, s)
    corner = frames[:, :, 0, 0]
    assert (np.abs(corner.astype(np.int16) - np.array(pad_color(MEAN), np.int16)) <= 1).all()
