"""The dashboard's visual comparison: crops of saved evaluation outputs (ground truth, input
baseline, baseline row, method row) where the method and the baseline differ most."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

from resweep.analysis.load import IMAGES_DIR, StudyData
from resweep.analysis.tables import AblationResult, html_escape

CROP = 96  # side of the visual-comparison crops, pixels


# --------------------------------------------------------------------------- visual comparison
def find_image(study_dir: Path, folder: str, set_name: str, image: str) -> Path | None:
    """``<study>/images/<folder>/<set>/<image>`` (image name as recorded, or its stem + .png)."""
    root = study_dir / IMAGES_DIR / folder / set_name
    for name in (image, Path(image).stem + ".png"):
        candidate = root / name
        # names come from the data: never let one escape the images folder
        if candidate.resolve().is_relative_to((study_dir / IMAGES_DIR).resolve()) and candidate.is_file():
            return candidate
    return None


def _crop_box(gt: np.ndarray, a: np.ndarray, b: np.ndarray, side: int) -> tuple[int, int, int]:
    """Top-left corner and side of the window where a and b differ most in squared error."""
    h, w = gt.shape[:2]
    side = min(side, h, w)
    diff = np.abs(((a - gt) ** 2).mean(axis=2) - ((b - gt) ** 2).mean(axis=2))
    integral = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), side


def _png_data_uri(arr: np.ndarray, scale: int = 2) -> str:
    from PIL import Image

    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def visual_comparison(
    data: StudyData, result: AblationResult, ranking: pd.DataFrame, method_row: int | None, max_images: int = 6
) -> tuple[str, bool]:
    """Crops (ground truth, input baseline, baseline row, method row) for the images of
    ``ranking`` when the study folder holds saved outputs; (html, whether any crop was found)."""
    if ranking.empty or method_row is None or result.baseline_row is None:
        return "", False
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return "", False
    trials = data.trials.assign(_row=result.rows.trial_row)
    done = trials[trials["status"] == "finished"]
    blocks = []
    for rec in ranking.head(max_images).to_dict("records"):
        s, image = str(rec["set"]), str(rec["image"])
        for seed in sorted(set(done.loc[done["_row"] == method_row, "seed"]) & set(done.loc[done["_row"] == result.baseline_row, "seed"])):
            tm = done.loc[(done["_row"] == method_row) & (done["seed"] == seed), "trial_id"].iloc[0]
            tb = done.loc[(done["_row"] == result.baseline_row) & (done["seed"] == seed), "trial_id"].iloc[0]
            paths = {"ground truth": find_image(data.dir, "_gt", s, image),
                     "input baseline": find_image(data.dir, "_baseline", s, image),
                     "baseline row": find_image(data.dir, str(tb), s, image),
                     "method row": find_image(data.dir, str(tm), s, image)}
            if paths["ground truth"] is None or paths["method row"] is None or paths["baseline row"] is None:
                continue
            arrays = {k: np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for k, p in paths.items() if p}
            shape = arrays["ground truth"].shape
            if any(a.shape != shape for a in arrays.values()):
                continue
            y, x, side = _crop_box(arrays["ground truth"], arrays["method row"], arrays["baseline row"], CROP)
            figs = "".join(
                f'<figure><img alt="{html_escape(k)}" src="{_png_data_uri(a[y:y + side, x:x + side])}">'
                f"<figcaption>{html_escape(k)}</figcaption></figure>"
                for k, a in arrays.items()
            )
            blocks.append(
                f'<div class="crops"><p><b>{html_escape(s)} / {html_escape(image)}</b>, seed {html_escape(seed)}: '
                f"Δ {html_escape(format(rec['delta'], '+.3f'))} (crop at x={x}, y={y})</p>{figs}</div>"
            )
            break
    return "\n".join(blocks), bool(blocks)
