"""The invert / paint / train-encoder commands (issue 22) on the toy generator: files written,
edits composited at the upload's resolution, and bad inputs as one clear line with exit 2."""
import json

import numpy as np
import pytest
from PIL import Image

from ganpaint.apps.cli import main
from tests.toy import DISSECT, TOY, error_line, run_cli as cli

FAST = ["--starts", "2", "--z-steps", "3", "--feature-steps", "3", "--adapt-steps", "3",
        "--encoder", "none", "--device", "cpu"]
W, H = 40, 30  # the upload: centre-cropped to 30×30 at x 5..34, resized to the toy's 16×16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inv")
    f = {"root": root, "dissection": root / "toy"}
    assert main(DISSECT + ["--out", str(f["dissection"])]) == 0
    rng = np.random.default_rng(0)
    f["image"] = root / "photo.png"
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(f["image"])
    f["other"] = root / "other.png"
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(f["other"])
    f["out"] = root / "inverted"
    assert main([str(a) for a in ["invert", f["image"], "--out", f["out"], *TOY, *FAST]]) == 0
    return f


def paint(f, *args):
    return ["paint", f["image"], *TOY, "--dissection", f["dissection"], "--concept", "bright",
            "--units", "4", *FAST, *args]


def test_invert_writes_the_state_the_reconstruction_and_the_json(files, capsys):
    out = files["out"]
    assert {p.name for p in out.iterdir()} == {"inversion.pt", "reconstruction.png", "inversion.json"}
    r = json.loads((out / "inversion.json").read_text())
    assert r["model"] == "tests.toy:tiny_generator" and r["size"] == 16
    assert "centre-cropped from 40×30 to 30×30" in r["message"]
    assert np.isfinite(r["psnr"]) and r["stats"]["psnr_adapted"] == r["psnr"]
    assert Image.open(out / "reconstruction.png").size == (16, 16)
    code, stdout, err = cli(capsys, ["invert", files["image"], "--out", files["root"] / "again",
                                     *TOY, *FAST, "--json"])
    assert code == 0, err
    assert json.loads(stdout)["size"] == 16  # --json: one object on stdout


def _unchanged_outside(f, edited_path):
    """The edit is in the crop's top-left corner: the margins outside the crop and the crop's
    bottom-right part are the input's pixels exactly; something changed."""
    a = np.asarray(Image.open(f["image"]).convert("RGB"))
    b = np.asarray(Image.open(edited_path))
    assert b.shape == a.shape
    assert np.array_equal(b[:, :5], a[:, :5]) and np.array_equal(b[:, 35:], a[:, 35:])
    assert np.array_equal(b[20:, 25:35], a[20:, 25:35])
    return a, b


@pytest.mark.parametrize("how", ["cells", "mask"])
def test_paint_composites_at_the_upload_resolution(files, capsys, how, tmp_path):
    if how == "cells":
        where = ["--cells", "0,0", "1,0"]
    else:
        m = np.zeros((H, W), np.uint8)
        m[0:3, 5:9] = 255  # the crop's top-left corner
        m[:, 0:2] = 255    # outside the crop: ignored, with a note
        Image.fromarray(m).save(tmp_path / "mask.png")
        where = ["--mask", tmp_path / "mask.png"]
    out = tmp_path / "sub" / "edited.png"
    for state in ([], ["--state", files["out"] / "inversion.pt"]):
        code, stdout, err = cli(capsys, paint(files, "--action", "remove", *where, "--out", out,
                                              *state))
        assert code == 0, err
        assert f"wrote {out} (40×30)" in stdout
        assert ("60 painted mask pixels outside the centre square are ignored" in stdout) == (how == "mask")
        _unchanged_outside(files, out)
    code, _, err = cli(capsys, paint(files, "--action", "draw", "--strength", "3", *where,
                                  "--out", out, "--state", files["out"] / "inversion.pt"))
    assert code == 0, err
    a, b = _unchanged_outside(files, out)
    assert not np.array_equal(a, b)


def test_invert_eval_and_train_encoder(files, capsys, tmp_path):
    code, stdout, err = cli(capsys, ["invert", "--eval", "--samples", "1", "--json", *TOY, *FAST])
    assert code == 0, err
    r = json.loads(stdout)
    assert r["samples"] == 1 and r["psnr_adapted"] is not None
    enc = tmp_path / "encoder.pt"
    args = ["train-encoder", "--model", "tests.toy:tiny_generator", "--out", tmp_path / "run",
            "--export", enc, "--batch-size", "4", "--device", "cpu"]
    assert cli(capsys, args + ["--steps", "2"])[0] == 0
    assert cli(capsys, args + ["--steps", "3"])[0] == 0  # resumes at step 2
    code, _, err = cli(capsys, ["invert", files["image"], "--out", tmp_path / "enc", *TOY, *FAST[:-4],
                             "--encoder", enc])
    assert code == 0, err
    assert "psnr_encoder" in json.loads((tmp_path / "enc" / "inversion.json").read_text())["stats"]


@pytest.mark.parametrize("case, words", [
    ("not-an-image", "is not an image"),
    ("missing-image", "file not found"),
    ("mask-size", "is 10×10, but the image is 40×30"),
    ("mask-empty", "paints nothing"),
    ("cells-range", "out of range; the painting layer is 8×8 cells"),
    ("cells-syntax", "expected x,y"),
    ("other-state", "state made from another image"),
    ("units", "--units 9"),
    ("no-out", "give --out DIR"),
    ("encoder-missing", "no such file"),
])
def test_bad_inputs_exit_2_with_one_clear_line(files, capsys, tmp_path, case, words):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(black)
    state = ["--state", files["out"] / "inversion.pt"]
    out = ["--out", tmp_path / "e.png"]
    args = {
        "not-an-image": ["invert", text, "--out", tmp_path / "x", *TOY, *FAST],
        "missing-image": ["invert", tmp_path / "nope.png", "--out", tmp_path / "x", *TOY, *FAST],
        "mask-size": paint(files, "--action", "remove", "--mask", small, *out, *state),
        "mask-empty": paint(files, "--action", "remove", "--mask", black, *out, *state),
        "cells-range": paint(files, "--action", "remove", "--cells", "8,0", *out, *state),
        "cells-syntax": paint(files, "--action", "remove", "--cells", "1;2", *out, *state),
        "other-state": ["paint", files["other"], *paint(files, "--action", "remove", "--cells",
                                                        "0,0", *out, *state)[2:]],
        "units": [a if a != "4" else "9" for a in paint(files, "--action", "draw", "--cells",
                                                         "0,0", *out, *state)],
        "no-out": ["invert", files["image"], *TOY, *FAST],
        "encoder-missing": ["invert", files["image"], "--out", tmp_path / "x", *TOY, *FAST[:-4],
                            "--encoder", tmp_path / "nope.pt"],
    }[case]
    code, _, err = cli(capsys, args)
    assert code == 2
    assert words in error_line(err)
    assert not (tmp_path / "e.png").exists()
