"""NIQE against BasicSR's port (``basicsr.metrics.niqe.calculate_niqe``, basicsr 1.4.2), the
implementation the SR papers' NIQE numbers come from, on photographs of different sizes.

basicsr is a test-only dependency (``pip install --no-deps basicsr==1.4.2`` is enough). Its
``__init__`` imports the whole package (OpenCV, lmdb, ``torchvision.transforms.functional_tensor``
that today's torchvision lacks, ...), so the test loads only the four files on the NIQE path
(``metrics/niqe.py``, ``metrics/metric_util.py``, ``utils/matlab_functions.py``,
``utils/color_util.py``, plus the trivial ``utils/registry.py``) under stand-in parent packages;
``niqe.py``'s ``import cv2`` (used only by its ``convert_to="gray"``, which resweep's ``"gray"``
does not follow: see ``resweep.metrics.niqe.niqe``) gets an empty stand-in, so OpenCV is not
needed. ``sys.modules`` is restored afterwards.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from resweep.metrics.niqe import niqe

from conftest import shared_dataset

# Observed gaps are < 5e-5 (Y rounding ties); the old float64 pipeline was 5e-3..8e-2 away on
# several of these images, the issue asked for 1e-3.
TOLERANCE = 2e-4


def _load_basicsr_niqe() -> types.ModuleType:
    spec = importlib.util.find_spec("basicsr")  # finds the package without running __init__
    if spec is None or spec.origin is None:
        pytest.skip("basicsr is not installed (pip install --no-deps basicsr==1.4.2)")
    root = Path(spec.origin).parent
    saved = {k: v for k, v in sys.modules.items() if k == "cv2" or k.split(".")[0] == "basicsr"}
    try:
        for name in ("basicsr", "basicsr.utils", "basicsr.metrics"):
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = package

        def load(name: str) -> types.ModuleType:
            path = root.joinpath(*name.split(".")[1:]).with_suffix(".py")
            file_spec = importlib.util.spec_from_file_location(name, path)
            assert file_spec is not None and file_spec.loader is not None
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            file_spec.loader.exec_module(module)
            return module

        sys.modules["basicsr.utils"].bgr2ycbcr = load("basicsr.utils.color_util").bgr2ycbcr
        for name in ("basicsr.utils.registry", "basicsr.utils.matlab_functions", "basicsr.metrics.metric_util"):
            load(name)
        sys.modules["cv2"] = types.ModuleType("cv2")
        return load("basicsr.metrics.niqe")
    except (ImportError, AttributeError, FileNotFoundError) as exc:
        pytest.skip(f"basicsr's NIQE module does not load here ({type(exc).__name__}: {exc})")
    finally:
        for name in [k for k in sys.modules if k == "cv2" or k.split(".")[0] == "basicsr"]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def basicsr_niqe() -> types.ModuleType:
    return _load_basicsr_niqe()


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def _mosaic() -> np.ndarray:
    """Four CBSD432 photographs, 2x2 (642x962): a large image from the shared sets."""
    tiles = [_rgb(shared_dataset("CBSD432") / f"{n}.jpg") for n in ("100007", "100039", "100075", "100080")]
    tiles = [t if t.shape[0] == 321 else t.transpose(1, 0, 2) for t in tiles]
    return np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)


def _skimage(name: str) -> np.ndarray:
    from skimage import data as skdata

    return skdata.stereo_motorcycle()[0] if name == "motorcycle" else skdata.hubble_deep_field()


# (id, loader): real photographs of 12 sizes, odd crops included; the first seven moved by
# 2e-4..8e-2 under the old float64 pipeline
CASES = {
    "CSet14/ppt3 656x529": lambda: _rgb(shared_dataset("CSet14") / "ppt3.png"),
    "CSet5/bird[1:,3:] 287x285": lambda: _rgb(shared_dataset("CSet5") / "bird.png")[1:, 3:],
    "CSet5/woman 344x228": lambda: _rgb(shared_dataset("CSet5") / "woman.png"),
    "CBSD68/101085 321x481": lambda: _rgb(shared_dataset("CBSD68") / "101085.png"),
    "CBSD432 2x2 mosaic 642x962": _mosaic,
    "CSet14/baboon[:, :492] 480x492": lambda: _rgb(shared_dataset("CSet14") / "baboon.png")[:, :492],
    "CSet14/zebra 391x586": lambda: _rgb(shared_dataset("CSet14") / "zebra.png"),
    "CSet14/barbara[5:534, 11:708] 529x697": lambda: _rgb(shared_dataset("CSet14") / "barbara.png")[5:534, 11:708],
    "CSet14/monarch 512x768": lambda: _rgb(shared_dataset("CSet14") / "monarch.png"),
    "CBSD432/100007[7:300, 3:460] 293x457": lambda: _rgb(shared_dataset("CBSD432") / "100007.jpg")[7:300, 3:460],
    "skimage motorcycle 500x741": lambda: _skimage("motorcycle"),
    "skimage hubble 872x1000": lambda: _skimage("hubble"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_niqe_matches_basicsr_port(basicsr_niqe, case):
    rgb = CASES[case]()
    # BasicSR reads images with OpenCV: BGR, 0..255
    want = basicsr_niqe.calculate_niqe(rgb[..., ::-1].astype(np.float64), 0, input_order="HWC", convert_to="y")
    got = niqe(torch.from_numpy(rgb).permute(2, 0, 1).double() / 255.0)
    assert got == pytest.approx(want, abs=TOLERANCE)


def test_grey_file_matches_basicsr_on_its_single_channel(basicsr_niqe):
    from PIL import Image

    grey = np.array(Image.open(shared_dataset("CSet14") / "bridge.png"))
    assert grey.ndim == 2
    want = basicsr_niqe.calculate_niqe(grey.astype(np.float64), 0, input_order="HW")
    got = niqe(torch.from_numpy(grey).double()[None] / 255.0)
    assert got == pytest.approx(want, abs=TOLERANCE)


def test_border_crop_matches_basicsr(basicsr_niqe):
    rgb = _rgb(shared_dataset("CSet5") / "baby.png")[:, 5:]  # 512x507, 4 px crop -> 504x499
    want = basicsr_niqe.calculate_niqe(rgb[..., ::-1].astype(np.float64), 4, input_order="HWC", convert_to="y")
    got = niqe(torch.from_numpy(rgb).permute(2, 0, 1).double() / 255.0, crop_border=4)
    assert got == pytest.approx(want, abs=TOLERANCE)
