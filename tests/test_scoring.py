"""``iqp score``: CSV + sidecar, odd and broken files, resume, merging into a CSV, torchrun sharding, summary.
CPU, no downloads."""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from iqp_plugin.cli.score import main as score_main
from iqp_plugin.prior import score_files, scoring
from iqp_plugin.prior.metrics import Normalizer, Prior, create_prior

pytestmark = pytest.mark.usefixtures("offline_cache")


@pytest.fixture
def images(tmp_path):
    """Two roots of natural-image crops, JPEG and PNG, one in a subfolder.

    Sorted names: img0-img3 (112 px), img5-img8 (128x144 px), sub/img4 (112 px): batches of 2 fill up.
    """
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    pictures = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    for i in range(9):
        pic = pictures[i % 3]
        y, x = 20 * i, 30 * i
        crop = pic[y:y + 112, x:x + 112] if i < 5 else pic[y:y + 128, x:x + 144]
        root = a / "sub" if i == 4 else a if i < 6 else b
        Image.fromarray(crop).save(root / (f"img{i}.jpg" if i % 3 else f"img{i}.png"), quality=60 + 4 * i)
    return [a, b]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_score_csv_sidecar_and_rescore(images, tmp_path):
    out = tmp_path / "scores.csv"
    result = scoring.score_folders(images, out, create_prior("offline+piqe"), batch=4, progress=False)
    rows = read_csv(out)
    assert result == {"scored": 9, "failed": {}}
    assert [r["imagename"] for r in rows] == sorted(["img0.png", "img1.jpg", "img2.jpg", "img3.png", "sub/img4.jpg",
                                                     "img5.jpg", "img6.png", "img7.jpg", "img8.jpg"])
    assert list(rows[0]) == ["imagename", "niqe", "piqe", "score"]
    scores = score_files.load_scores(out)
    assert min(scores.values()) >= 0 and max(scores.values()) <= 1 and len(set(scores.values())) == 9
    assert not list(tmp_path.glob("*partial*"))
    sidecar = json.loads(scoring.sidecar_path(out).read_text())
    assert sidecar["metrics"] == ["niqe", "piqe"] and sidecar["count"] == 9 and sidecar["failed"] == []

    # a re-scored image lands on the same normalised score through the sidecar
    norm = Normalizer.load(scoring.sidecar_path(out))
    modules = norm.prior.create_metrics("cpu")
    x, _ = scoring.load_image(images[0] / "sub" / "img4.jpg")
    raw = scoring.score_batch(modules, x[None])[0]
    assert raw["niqe"] == pytest.approx(float(rows[-1]["niqe"]), rel=1e-9)
    assert norm(raw) == pytest.approx(scores["sub/img4.jpg"], abs=1e-9)

    # same names from two roots are refused
    Image.open(images[0] / "img1.jpg").save(images[1] / "img1.jpg")
    with pytest.raises(ValueError, match="img1.jpg"):
        scoring.score_folders(images, out, progress=False)


def test_corrupt_rgba_gray_16bit(images, tmp_path):
    a = images[0]
    (a / "broken.png").write_bytes(b"\x89PNG not really")
    Image.open(a / "img1.jpg").convert("RGBA").save(a / "rgba.png")
    Image.open(a / "img3.png").convert("L").save(a / "gray.png")
    gray16 = (np.asarray(Image.open(a / "img0.png").convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(a / "deep.png")
    x, note = scoring.load_image(a / "deep.png")
    assert note == "16-bit" and x.shape == (3, 112, 112) and 0 <= x.min() and x.max() <= 1
    assert scoring.load_image(a / "rgba.png")[1] == "alpha" and scoring.load_image(a / "gray.png")[1] == "grayscale"

    out = tmp_path / "scores.csv"
    with pytest.warns(UserWarning) as record:
        result = scoring.score_folders(images, out, batch=3, progress=False)
    messages = [str(w.message) for w in record]
    assert sum("broken.png: cannot read" in m for m in messages) == 1
    assert sum("alpha channel" in m for m in messages) == 1 and sum("16-bit" in m for m in messages) == 1
    assert result["scored"] == 12 and list(result["failed"]) == ["broken.png"]
    names = score_files.load_scores(out)
    assert "broken.png" not in names and {"rgba.png", "gray.png", "deep.png"} <= set(names)
    assert json.loads(scoring.sidecar_path(out).read_text())["failed"][0]["imagename"] == "broken.png"
    summary = scoring.summarize(out, top=25)
    assert summary["failed"][0]["imagename"] == "broken.png"


def test_resume_scores_each_image_once(images, tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    calls = Counter()
    real = scoring.score_batch

    def counting(modules, x):
        if sum(calls.values()) >= 4:
            raise KeyboardInterrupt  # the run is killed after two batches of two
        results = real(modules, x)
        calls.update(v["niqe"] for v in results)
        return results

    monkeypatch.setattr(scoring, "score_batch", counting)
    with pytest.raises(KeyboardInterrupt):
        scoring.score_folders(images, out, batch=2, progress=False)
    assert not out.exists()
    partial, = tmp_path.glob("scores.csv.rank0.partial.csv")
    assert len(read_csv(partial)) == 4
    with open(partial, "a", newline="") as f:  # the kill also cut a row in half
        f.write("img7.jpg,7.1")

    def finishing(modules, x):
        results = real(modules, x)
        calls.update(v["niqe"] for v in results)
        return results

    monkeypatch.setattr(scoring, "score_batch", finishing)
    assert scoring.score_folders(images, out, batch=2, progress=False)["scored"] == 9
    rows = read_csv(out)
    assert len(rows) == 9 and len({r["imagename"] for r in rows}) == 9
    assert sorted(calls.values()) == [1] * 9  # each image computed once over both runs
    assert scoring.score_folders(images, out, batch=2, progress=False)["scored"] == 9  # done: nothing to compute
    assert sorted(calls.values()) == [1] * 9 and read_csv(out) == rows


def test_torchrun_two_ranks_equal_one_process(images, tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    scoring.score_folders(images, one, create_prior("offline+piqe"), batch=4, progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "iqp_plugin.cli.score", "-i", str(images[0]), "-i", str(images[1]), "-o", str(two),
           "--metrics", "niqe,piqe", "--batch", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows1, rows2 = read_csv(one), read_csv(two)
    assert [r["imagename"] for r in rows1] == [r["imagename"] for r in rows2]
    for r1, r2 in zip(rows1, rows2, strict=False):
        for key in ("niqe", "piqe", "score"):
            assert float(r2[key]) == pytest.approx(float(r1[key]), rel=1e-9, abs=1e-12)
    assert json.loads(scoring.sidecar_path(one).read_text()) == json.loads(scoring.sidecar_path(two).read_text())


def test_summary_and_cli(images, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    score_main(["-i", str(images[0]), "-i", str(images[1]), "-o", str(out), "--metrics", "piqe"])
    score_main(["--summary", str(out), "--top", "20"])
    text = capsys.readouterr().out
    assert "| piqe |" in text and "| score |" in text and "top 20%" in text
    summary = json.loads((tmp_path / "scores_summary.json").read_text())
    scores = sorted(score_files.load_scores(out).values())
    assert summary["hq_threshold"] == pytest.approx(float(np.quantile(scores, 0.8)))
    assert summary["hq_count"] == 2 and summary["stats"]["piqe"]["min"] <= summary["stats"]["piqe"]["max"]
    for png in summary["histograms"].values():
        assert Path(png).read_bytes()[:4] == b"\x89PNG"
    assert set(summary["histograms"]) == {"piqe", "score"}
    with pytest.raises(ValueError, match="holds scores for"):
        scoring.score_folders(images, out, create_prior("niqe"), progress=False)


# ---------------------------------------------------------------- merging into an existing CSV
@pytest.fixture
def fast_metric(monkeypatch):
    """A stand-in for NIQE that needs no metric module: 'niqe' = 255 x the image's mean. Lists the value of
    every image computed in ``computed``; raises KeyboardInterrupt (a killed run) once ``stop`` images are
    computed, when ``stop`` is set; takes ``delay`` seconds per image."""
    state = {"computed": [], "stop": None, "delay": 0.0}

    def score_batch(modules, x):
        if state["stop"] is not None and len(state["computed"]) >= state["stop"]:
            raise KeyboardInterrupt
        time.sleep(state["delay"] * len(x))
        values = [round(float(img.mean()) * 255) for img in x]
        state["computed"] += values
        return [{"niqe": float(v)} for v in values]

    monkeypatch.setattr(Prior, "create_metrics", lambda self, device="cpu", as_loss=False: {})
    monkeypatch.setattr(scoring, "score_batch", score_batch)
    return state


def flat_png(path, value):
    """An 8x8 PNG of one grey ``value``: the stand-in metric scores it ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def raw_scores(out):
    return {r["imagename"]: float(r["niqe"]) for r in read_csv(out)}


def test_scoring_another_folder_merges(tmp_path, fast_metric):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "s.csv"
    flat_png(a / "x.png", 10), flat_png(a / "y.png", 20), flat_png(b / "z.png", 40)
    score_main(["-i", str(a), "-o", str(out)])
    score_main(["-i", str(b), "-o", str(out)])
    assert raw_scores(out) == {"x.png": 10, "y.png": 20, "z.png": 40}  # a's rows kept, b's added
    assert fast_metric["computed"] == [10, 20, 40]
    assert json.loads(scoring.sidecar_path(out).read_text())["count"] == 3

    score_main(["-i", str(b), "-o", str(out)])  # unchanged files: nothing computed
    flat_png(b / "z.png", 50)  # a changed file is scored again
    score_main(["-i", str(b), "-o", str(out)])
    assert fast_metric["computed"] == [10, 20, 40, 50]
    assert raw_scores(out) == {"x.png": 10, "y.png": 20, "z.png": 50}
    assert sorted(score_files.load_scores(out).values()) == [0.0, 0.5, 1.0]  # normalised over all rows

    score_main(["-i", str(a), "-o", str(out), "--replace"])
    assert raw_scores(out) == {"x.png": 10, "y.png": 20}
    assert not list(tmp_path.glob("*partial*"))


def test_foreign_json_beside_the_csv_is_kept(tmp_path, fast_metric, capsys):
    from iqp_plugin.cli import run

    flat_png(tmp_path / "a" / "x.png", 10)
    mine = tmp_path / "s.json"
    mine.write_text('{"my": "notes"}')
    for extra in ([], ["--replace"]):
        with pytest.raises(SystemExit) as exit_:
            run(score_main, ["-i", str(tmp_path / "a"), "-o", str(tmp_path / "s.csv"), *extra])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1
        assert f"{mine} exists and is not an iqp score sidecar; move it away or choose another -o" in err
    assert mine.read_text() == '{"my": "notes"}' and not (tmp_path / "s.csv").exists()
    assert fast_metric["computed"] == []


def test_output_folder_means_scores_csv_in_it(tmp_path, fast_metric, capsys):
    flat_png(tmp_path / "a" / "x.png", 10)
    score_main(["-i", str(tmp_path / "a"), "-o", f"{tmp_path / 'new'}/"])
    assert raw_scores(tmp_path / "new" / "scores.csv") == {"x.png": 10}
    new = tmp_path / "new"
    assert f"in {new / 'scores.csv'} (constants in {new / 'scores.json'})" in capsys.readouterr().out
    (tmp_path / "old").mkdir()
    score_main(["-i", str(tmp_path / "a"), "-o", str(tmp_path / "old")])
    assert raw_scores(tmp_path / "old" / "scores.csv") == {"x.png": 10}


NAMES = [f"img{i}.png" for i in range(6)]
VALUE = {name: 20 + 30 * i for i, name in enumerate(NAMES)}  # the stand-in score of each image
RUN = st.tuples(st.sets(st.sampled_from(NAMES), min_size=1),  # the images of the folder
                st.integers(0, 2),  # which of three folders holds them
                st.booleans(),  # --replace
                st.none() | st.integers(0, 5))  # killed after this many images computed, or not
TWO = st.none() | st.tuples(st.sets(st.sampled_from(NAMES), min_size=1, max_size=5),  # the first folder's images
                            st.sampled_from([0.0, 0.1, 0.4]))  # seconds between the two starts


def _score_in_child(argv, start, delay, conn):
    """In a forked process: ``iqp score ARGV`` once ``start`` is set; sends (exit code, stderr)."""
    import contextlib
    import io

    from iqp_plugin.cli import run

    err = io.StringIO()
    start.wait()
    time.sleep(delay)
    with contextlib.redirect_stderr(err):
        try:
            run(score_main, argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    conn.send((code, err.getvalue()))


def score_two_at_once(out, folders, stagger):
    """``iqp score`` over each of ``folders`` into ``out``, in two processes started together (the second
    ``stagger`` seconds later): [(exit code, stderr)] of each."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    pipes, procs = [], []
    for folder, delay in zip(folders, (0.0, stagger), strict=True):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_score_in_child, args=(["-i", str(folder), "-o", str(out), "--batch", "1"],
                                                         start, delay, theirs))
        proc.start()
        pipes.append(mine), procs.append(proc)
    start.set()
    results = [pipe.recv() if pipe.poll(120) else (None, "no answer") for pipe in pipes]
    for proc in procs:
        proc.join(10)
    return results


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(RUN, min_size=1, max_size=6), two=TWO)
def test_merge_and_resume_property(fast_metric, runs, two):
    """Runs over overlapping folders, killed at random points: the CSV holds exactly one row per image scored
    by a finished run (or by the killed runs it finished), and loses none unless --replace; a run that would
    give a name held by another folder's image is refused. Two processes scoring two folders into one CSV at
    once: both folders end up scored, or the second is refused in one line and the first one's CSV is complete."""
    from iqp_plugin.errors import InvalidInputError

    prior = create_prior("offline")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "scores.csv"
        held, pending = {}, {}  # {name: folder} of what the CSV holds; of what killed runs left in the partials
        for names, folder, replace, stop in runs:
            root = tmp / f"f{folder}"
            for path in root.glob("*.png"):
                if path.name not in names:
                    path.unlink()
            for name in names - {p.name for p in root.glob("*.png")}:
                flat_png(root / name, VALUE[name])
            before = read_csv(out) if out.exists() else []
            fast_metric.update(computed=[], stop=stop)
            clash = not replace and any({**held, **pending}.get(n, folder) != folder for n in names)
            try:
                scoring.score_folders([root], out, prior, batch=1, progress=False, replace=replace)
            except KeyboardInterrupt:
                pending |= {n: folder for n in NAMES if VALUE[n] in fast_metric["computed"]}
            except InvalidInputError as err:
                assert clash and "another image: score the folders into separate CSVs" in str(err)
                assert fast_metric["computed"] == []
            else:
                assert not clash
                held = ({} if replace else held) | pending | dict.fromkeys(names, folder)
                pending = {}
            rows = read_csv(out) if out.exists() else []
            assert len(rows) == len({r["imagename"] for r in rows})  # one row per image
            assert {r["imagename"] for r in rows} == set(held)
            assert all(float(r["niqe"]) == VALUE[r["imagename"]] for r in rows)
            if not replace:
                assert {r["imagename"] for r in before} <= {r["imagename"] for r in rows}  # no row lost

        if two is not None:  # two processes at once, two folders of distinct names, one new CSV
            first, stagger = two
            both, folders = tmp / "both.csv", [tmp / "p", tmp / "q"]
            for folder, names in zip(folders, (first, set(NAMES) - first), strict=True):
                for name in names:
                    flat_png(folder / name, VALUE[name])
            fast_metric.update(computed=[], stop=None, delay=0.02)
            results = score_two_at_once(both, folders, stagger)
            fast_metric["delay"] = 0.0
            codes = [code for code, _ in results]
            assert sorted(codes) in ([0, 0], [0, 2]), results
            if codes == [0, 0]:
                assert set(raw_scores(both)) == set(NAMES)  # every image of both folders scored
                assert json.loads(scoring.sidecar_path(both).read_text())["failed"] == []
            else:
                refused = codes.index(2)
                err = results[refused][1]
                assert err.count("\n") == 1 and err.startswith(f"iqp: error: -o {both} is being written by another "
                                                               "run (pid ")
                assert set(raw_scores(both)) == {p.name for p in folders[1 - refused].glob("*.png")}  # complete
                scoring.score_folders([folders[refused]], both, prior, batch=1, progress=False)  # its rerun merges
                assert set(raw_scores(both)) == set(NAMES)
            assert not list(tmp.glob("both.csv*partial*")) and not (tmp / ".both.csv.lock").exists()


# ---------------------------------------------------------------- bad inputs and outputs, Ctrl-C
def run_cli(argv, capsys):
    """``iqp score ARGV`` through the top-level handler: (exit code, its stderr)."""
    from iqp_plugin.cli import run

    capsys.readouterr()  # what earlier calls printed
    with pytest.raises(SystemExit) as exit_:
        try:
            run(score_main, argv)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped the top-level handler (a traceback)")
    return exit_.value.code, capsys.readouterr().err


@pytest.fixture
def no_metric(monkeypatch):
    """Fails the test if a metric module is created."""
    monkeypatch.setattr(Prior, "create_metrics", lambda *a, **k: pytest.fail("a metric was loaded"))


def test_empty_input_folder_is_named(tmp_path, no_metric, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(["-i", str(tmp_path / "empty"), "-o", str(tmp_path / "s.csv")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("iqp: error: no images (.bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp) under "
                          f"{tmp_path / 'empty'}")
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"]


def test_folder_where_no_image_can_be_scored_says_so(tmp_path, capsys):
    flat_png(tmp_path / "a" / "tiny.png", 10)  # 8 px: NIQE cannot score it
    code, err = run_cli(["-i", str(tmp_path / "a"), "-o", str(tmp_path / "s.csv")], capsys)
    assert code == 2
    assert "iqp: error: none of the 1 images could be scored with niqe, e.g. tiny.png (metric failed" in err


@pytest.mark.parametrize("case", ["read_only", "csv_is_a_folder", "parent_is_a_file"])
def test_unwritable_output_fails_before_any_metric_loads(tmp_path, request, no_metric, capsys, case):
    flat_png(tmp_path / "a" / "x.png", 10)
    if case == "read_only":
        read_only_folder = request.getfixturevalue("read_only_folder")
        out = read_only_folder / "s.csv"
        message = f"-o {read_only_folder / 's.csv'}: cannot write in {read_only_folder}"
    elif case == "csv_is_a_folder":
        (tmp_path / "d" / "scores.csv").mkdir(parents=True)
        out, message = f"{tmp_path / 'd'}/", f"-o {tmp_path / 'd' / 'scores.csv'} is a folder, not a file"
    else:
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "s.csv"
        message = f"-o {tmp_path / 'f' / 's.csv'}: {tmp_path / 'f'} is a file, not a folder"
    code, err = run_cli(["-i", str(tmp_path / "a"), "-o", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"iqp: error: {message}")
    assert not list(tmp_path.rglob("*.partial.csv"))


def test_non_numeric_value_in_the_csv_names_file_and_row(tmp_path, fast_metric):
    a, out = tmp_path / "a", tmp_path / "s.csv"
    flat_png(a / "x.png", 10), flat_png(a / "y.png", 20)
    score_main(["-i", str(a), "-o", str(out)])
    out.write_text(out.read_text().replace("y.png,20.0,", "y.png,abc,"))
    with pytest.raises(ValueError) as err:
        score_main(["-i", str(a), "-o", str(out)])  # merging must not drop the row without a word
    assert str(err.value).startswith(f"{out} line 3 (y.png): niqe 'abc' is not a number")
    with pytest.raises(ValueError, match=r"s\.csv line 3 \(y\.png\): niqe 'abc' is not a number"):
        scoring.summarize(out)
    score_main(["-i", str(a), "-o", str(out), "--replace"])  # the way out the message gives
    assert raw_scores(out) == {"x.png": 10, "y.png": 20}


def test_ctrl_c_says_where_the_partial_work_is(tmp_path, fast_metric, capsys):
    a, out = tmp_path / "a", tmp_path / "s.csv"
    for value in (10, 20, 30):
        flat_png(a / f"x{value}.png", value)
    fast_metric["stop"] = 1
    code, err = run_cli(["-i", str(a), "-o", str(out), "--batch", "1"], capsys)
    partial = tmp_path / "s.csv.rank0.partial.csv"
    assert code == 130 and err.splitlines()[-1] == f"iqp: interrupted, partial work kept in {partial}"
    assert len(read_csv(partial)) == 1


def test_the_one_lister_names_broken_symlinks_in_a_warning(tmp_path):
    from iqp_plugin.io import images

    root = tmp_path / "a"
    flat_png(root / "x.png", 10)
    (root / "gone.png").symlink_to(tmp_path / "moved.png")
    message = f"1 broken symbolic link skipped: {root / 'gone.png'} -> {tmp_path / 'moved.png'}"
    with pytest.warns(UserWarning, match=message):
        assert images.list_images(root) == ["x.png"]


def test_normalizer_sidecar_puts_a_second_folder_on_the_same_scale(images, tmp_path):
    """Scores of new images made with the training set's sidecar (--normalizer) are on the training set's scale:
    an image in both runs gets the same score, though the second folder alone would span [0, 1] by itself."""
    from iqp_plugin.cli import run

    train_csv, new_csv, alone_csv = tmp_path / "train.csv", tmp_path / "new.csv", tmp_path / "alone.csv"
    scoring.score_folders([images[0]], train_csv, create_prior("offline+piqe"), batch=4, progress=False)
    run(score_main, ["-i", str(images[1]), "-o", str(new_csv), "--normalizer", str(scoring.sidecar_path(train_csv))])
    scoring.score_folders([images[1]], alone_csv, create_prior("offline+piqe"), batch=4, progress=False)
    norm = Normalizer.load(scoring.sidecar_path(train_csv))
    new, alone = read_csv(new_csv), read_csv(alone_csv)
    assert list(new[0]) == ["imagename", "niqe", "piqe", "score"]  # the sidecar's prior, not --metrics' default
    for row in new:
        raw = {"niqe": float(row["niqe"]), "piqe": float(row["piqe"])}
        assert float(row["score"]) == pytest.approx(norm(raw), abs=1e-12)
    assert json.loads(scoring.sidecar_path(new_csv).read_text())["ranges"] == \
        json.loads(scoring.sidecar_path(train_csv).read_text())["ranges"]
    assert sorted(float(r["score"]) for r in alone) != sorted(float(r["score"]) for r in new)  # min-max differs

    # a shared image: scored again into the new run, it keeps its training-set score
    shutil.copy(images[0] / "img1.jpg", images[1] / "img1.jpg")
    run(score_main, ["-i", str(images[1]), "-o", str(new_csv), "--normalizer", str(scoring.sidecar_path(train_csv))])
    expected = score_files.load_scores(train_csv)["img1.jpg"]
    assert score_files.load_scores(new_csv)["img1.jpg"] == pytest.approx(expected, abs=1e-9)

    with pytest.raises(SystemExit):  # a missing sidecar, or --metrics that contradict it: one line, exit 2
        run(score_main, ["-i", str(images[1]), "-o", str(new_csv), "--normalizer", str(tmp_path / "none.json")])
    with pytest.raises(SystemExit):
        run(score_main, ["-i", str(images[1]), "-o", str(new_csv), "--metrics", "niqe",
                           "--normalizer", str(scoring.sidecar_path(train_csv))])


# ---------------------------------------------------------------- one writer, outputs apart, nothing silent (#42)
def test_a_lock_left_by_a_killed_run_never_blocks(tmp_path, fast_metric, capsys):
    """While another process holds the CSV's lock, a run is refused in one line naming it; once that process
    is killed (its lock file left behind), the next run scores."""
    import signal
    import socket

    from iqp_plugin.io.locks import lock_path

    a, out = tmp_path / "a", tmp_path / "s.csv"
    flat_png(a / "x.png", 10)
    code = ("import sys, time\nfrom iqp_plugin.io.locks import exclusive\n"
            "with exclusive(sys.argv[1], 'x', 'y'):\n    print('held', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        exit_code, err = run_cli(["-i", str(a), "-o", str(out)], capsys)
        assert exit_code == 2 and err == (f"iqp: error: -o {out} is being written by another run (pid {holder.pid} "
                                          f"on {socket.gethostname()}): run this again when it has ended (it then "
                                          "merges), or choose another -o\n")
        assert fast_metric["computed"] == [] and not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # what the killed run left
    score_main(["-i", str(a), "-o", str(out)])
    assert raw_scores(out) == {"x.png": 10} and not lock_path(out).exists()


def test_output_over_an_input_is_refused_before_any_metric_loads(tmp_path, no_metric, capsys):
    a = tmp_path / "a"
    flat_png(a / "x.png", 10)
    image = (a / "x.png").read_bytes()
    for extra in ([], ["--replace"]):
        code, err = run_cli(["-i", str(a), "-o", str(a / "x.png"), *extra], capsys)
        assert code == 2 and err == f"iqp: error: -o {a / 'x.png'} is an input of this command: write it elsewhere\n"
    assert (a / "x.png").read_bytes() == image and sorted(p.name for p in a.iterdir()) == ["x.png"]
    (tmp_path / "notes.json").write_text("{}")  # an input given as a file, at the sidecar's path
    code, err = run_cli(["-i", str(tmp_path / "notes.json"), "-o", str(tmp_path / "notes.csv")], capsys)
    assert code == 2 and err.startswith(f"iqp: error: sidecar {tmp_path / 'notes.json'} is an input of this command")


def test_same_name_from_another_folder_is_refused(tmp_path, fast_metric, capsys):
    """A/x.png scored, then B/x.png (another image) into the same CSV: refused, nothing replaced. The same files
    in a moved folder are the same images; --replace starts the CSV anew."""
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "s.csv"
    flat_png(a / "x.png", 10), flat_png(a / "y.png", 20), flat_png(b / "x.png", 30)
    score_main(["-i", str(a), "-o", str(out)])
    csv_text = out.read_text()
    code, err = run_cli(["-i", str(b), "-o", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"iqp: error: 'x.png' names {b / 'x.png'} here but {a / 'x.png'} in {out}")
    assert err.endswith("score the folders into separate CSVs, or pass --replace to keep only this run's images\n")
    assert out.read_text() == csv_text and fast_metric["computed"] == [10, 20]

    moved = tmp_path / "A2"
    a.rename(moved)  # same files (inode, size, time): nothing to compute, the new paths recorded
    score_main(["-i", str(moved), "-o", str(out)])
    assert fast_metric["computed"] == [10, 20] and raw_scores(out) == {"x.png": 10, "y.png": 20}
    paths = json.loads(scoring.sidecar_path(out).read_text())["paths"]
    assert paths == {"x.png": str(moved / "x.png"), "y.png": str(moved / "y.png")}

    score_main(["-i", str(b), "-o", str(out), "--replace"])
    assert raw_scores(out) == {"x.png": 30}


def test_partial_written_before_paths_were_recorded_resumes(tmp_path, fast_metric):
    a, out = tmp_path / "a", tmp_path / "s.csv"
    flat_png(a / "x.png", 10), flat_png(a / "y.png", 20)
    signature = scoring.file_signature(a / "x.png")
    (tmp_path / "s.csv.rank0.partial.csv").write_text(f"imagename,niqe,error,file\r\nx.png,10.0,,{signature}\r\n")
    score_main(["-i", str(a), "-o", str(out)])
    assert fast_metric["computed"] == [20] and raw_scores(out) == {"x.png": 10, "y.png": 20}


def sidecar_of(tmp_path, fast_metric, norm="minmax"):
    """A sidecar of two scored images (raw 10 and 40) and a folder of new images to score with it."""
    flat_png(tmp_path / "train" / "t1.png", 10), flat_png(tmp_path / "train" / "t2.png", 40)
    flat_png(tmp_path / "new" / "n.png", 20)
    score_main(["-i", str(tmp_path / "train"), "-o", str(tmp_path / "train.csv"), "--norm", norm])
    return json.loads((tmp_path / "train.json").read_text())


BAD_SIDECARS = {  # edit of a good sidecar -> the field the error must name
    "nan_range": (lambda d: d["ranges"].update(niqe=[float("nan"), 40.0]), "'ranges' of niqe is [NaN, 40.0]: not"),
    "inverted_range": (lambda d: d["ranges"].update(niqe=[40.0, 10.0]), "'ranges' of niqe is [40.0, 10.0]: inverted"),
    "empty_range": (lambda d: d["ranges"].update(niqe=[10.0, 10.0]), "'ranges' of niqe is [10.0, 10.0]: empty"),
    "zero_weights": (lambda d: d.update(weights=[0.0]), "'metrics'/'weights' cannot be used (weights must be"),
    "nan_weight": (lambda d: d.update(weights=[float("nan")]), "'weights' is [NaN]: not finite"),
    "unknown_norm": (lambda d: d.update(norm="zscore"), "'norm' is \"zscore\", not one of minmax, fixed, rank"),
    "range_a_number": (lambda d: d["ranges"].update(niqe=5), "'ranges' of niqe is 5, not a list of 2 numbers"),
    "range_of_three": (lambda d: d["ranges"].update(niqe=[1, 2, 3]), "'ranges' of niqe is [1, 2, 3], not a list"),
    "no_range": (lambda d: d.update(ranges={}), "'ranges' must give [low, high] for each of niqe"),
    "weights_a_string": (lambda d: d.update(weights="1"), "'weights' is \"1\", not a list of 1 number"),
    "weights_too_many": (lambda d: d.update(weights=[1.0, 1.0]), "'weights' is [1.0, 1.0], not a list of 1 number"),
    "metrics_a_string": (lambda d: d.update(metrics="niqe"), "'metrics' is \"niqe\", not a list of metric names"),
    "unknown_metric": (lambda d: d.update(metrics=["nqie"]), "unknown NR-IQA metric 'nqie'"),
    "rank_without_quantiles": (lambda d: d.update(norm="rank"), "'quantiles' must list the raw values"),
    "direction_flipped": (lambda d: d.update(lower_better=[False]), "'lower_better' is [false], but pyiqa gives"),
}


@pytest.mark.parametrize("case", list(BAD_SIDECARS))
def test_malformed_normalizer_sidecar_is_one_line_naming_the_field(tmp_path, fast_metric, capsys, case):
    side = sidecar_of(tmp_path, fast_metric)
    edit, message = BAD_SIDECARS[case]
    edit(side)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(side))
    code, err = run_cli(["-i", str(tmp_path / "new"), "-o", str(tmp_path / "new.csv"), "--normalizer", str(bad)],
                        capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"iqp: error: --normalizer {bad}: ")
    assert message in err and not (tmp_path / "new.csv").exists() and fast_metric["computed"] == [10, 40]


def test_normalizer_weights_are_normalised_and_weights_must_be_finite(tmp_path, fast_metric, capsys):
    side = sidecar_of(tmp_path, fast_metric)
    side["weights"] = [2.0]
    (tmp_path / "w2.json").write_text(json.dumps(side))
    score_main(["-i", str(tmp_path / "new"), "-o", str(tmp_path / "new.csv"), "--normalizer", str(tmp_path / "w2.json")
                ])
    assert score_files.load_scores(tmp_path / "new.csv") == {"n.png": pytest.approx(2 / 3)}  # not 4 / 3
    code, err = run_cli(["-i", str(tmp_path / "new"), "-o", str(tmp_path / "x.csv"), "--weights", "nan"], capsys)
    assert code == 2 and err == "iqp: error: weights must be finite numbers >= 0 with a positive sum, got [nan]\n"


def test_merge_keeps_the_csvs_normalisation(tmp_path, fast_metric, capsys):
    """Without --norm and --normalizer a merge keeps the CSV's normalisation (its norm, or the constants it was
    made with); with either asking for another, every earlier score changes scale with a warning, repeated at
    the end."""
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "s.csv"
    for v in (10, 20, 30, 40, 50):
        flat_png(a / f"a{v}.png", v)
    flat_png(b / "b.png", 250)
    score_main(["-i", str(a), "-o", str(out), "--norm", "minmax"])
    score_main(["-i", str(b), "-o", str(out)])  # no --norm: the CSV's min-max, not the default rank
    scores = score_files.load_scores(out)
    assert json.loads(scoring.sidecar_path(out).read_text())["norm"] == "minmax"
    assert [scores[f"a{v}.png"] for v in (10, 50)] == pytest.approx([1.0, 1 - 40 / 240])

    flat_png(b / "c.png", 60)
    capsys.readouterr()
    change = (f"every earlier score in {out} is normalised again: it was made with --norm minmax, this run uses "
              "--norm rank over all its rows (leave --norm and --normalizer out, or pass --norm minmax, to keep its "
              "scale)")
    with pytest.warns(UserWarning) as record:
        score_main(["-i", str(b), "-o", str(out), "--norm", "rank"])
    assert [str(w.message) for w in record] == [change]
    assert capsys.readouterr().out.splitlines()[-1] == f"warning: {change}"  # repeated at the end
    assert json.loads(scoring.sidecar_path(out).read_text())["norm"] == "rank"

    for v in (5, 9, 60):
        flat_png(tmp_path / "t" / f"t{v}.png", v)
    score_main(["-i", str(tmp_path / "t"), "-o", str(tmp_path / "train.csv"), "--norm", "minmax"])
    train = tmp_path / "train.json"  # the constants of another run
    fixed = tmp_path / "fixed.csv"
    score_main(["-i", str(a), "-o", str(fixed), "--normalizer", str(train)])
    flat_png(tmp_path / "c" / "c.png", 15)
    score_main(["-i", str(tmp_path / "c"), "-o", str(fixed)])  # no --normalizer: the CSV's constants kept
    norm = Normalizer.load(train)
    assert score_files.load_scores(fixed)["c.png"] == pytest.approx(norm({"niqe": 15.0}))
    assert score_files.load_scores(fixed)["a10.png"] == pytest.approx(norm({"niqe": 10.0}))
    assert json.loads(scoring.sidecar_path(fixed).read_text())["constants_from"] == str(train)
    with pytest.warns(UserWarning, match=f"it was made with the constants of {train} \\(--norm minmax\\), this run "
                      "uses --norm minmax over all its rows"):
        score_main(["-i", str(tmp_path / "c"), "-o", str(fixed), "--norm", "minmax"])
    with pytest.warns(UserWarning, match=f"it was made with --norm minmax, this run uses the constants of "
                      f"--normalizer {train}"):
        score_main(["-i", str(tmp_path / "c"), "-o", str(fixed), "--normalizer", str(train)])


def test_summary_of_a_file_that_is_not_a_score_csv_and_an_unknown_device(tmp_path, no_metric, capsys):
    other, binary, short, high = (tmp_path / n for n in ("other.csv", "binary.csv", "short.csv", "high.csv"))
    other.write_text("a,b\n1,2\n")
    flat_png(tmp_path / "x.png", 10)
    binary.write_bytes((tmp_path / "x.png").read_bytes())
    short.write_text("imagename,niqe,score\nx.png,3.0\n")
    high.write_text("imagename,niqe,score\nx.png,3.0,1.5\n")
    expected = {
        other: f"{other} is not a scores CSV (its columns: a, b; it needs imagename and score)",
        binary: f"{binary} is not a scores CSV ('utf-8' codec can't decode",
        short: f"{short} line 2 (x.png): score '' is not a number",
        high: f"the score column of {high} must lie in [0, 1] (the normalised quality scale): x.png has 1.5",
    }
    for path, message in expected.items():
        code, err = run_cli(["--summary", str(path)], capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith(f"iqp: error: {message}"), err
    code, err = run_cli(["--summary", str(high), "--top", "150"], capsys)
    assert code == 2 and err == "iqp: error: --top 150 must be a percentage in [0, 100]\n"
    code, err = run_cli(["-i", str(tmp_path / "x.png"), "-o", str(tmp_path / "s.csv"), "--device", "tpu"], capsys)
    assert code == 2 and err == "iqp: error: --device tpu is not a device name: use auto, cpu, cuda or cuda:N\n"
    assert not list(tmp_path.glob("*partial*")) and not (tmp_path / "s.csv").exists()


def test_replace_clears_a_partial_of_other_metrics(tmp_path, fast_metric, capsys):
    a, out = tmp_path / "a", tmp_path / "s.csv"
    flat_png(a / "x.png", 10)
    stale = tmp_path / "s.csv.rank0.partial.csv"
    stale.write_text("imagename,piqe,error,file\r\nx.png,3.0,,1-2-3\r\n")
    code, err = run_cli(["-i", str(a), "-o", str(out)], capsys)  # without --replace: kept, and the way out named
    assert code == 2 and err.rstrip().endswith("delete it, write to another output, or pass --replace")
    assert stale.exists()
    score_main(["-i", str(a), "-o", str(out), "--replace"])
    assert raw_scores(out) == {"x.png": 10} and not stale.exists()


def test_no_nan_or_out_of_range_score_is_written(tmp_path, fast_metric):
    """A NaN raw value in the CSV is refused like any non-number; a normalizer that would give scores beyond
    [0, 1] is refused before the CSV is written; equal scores for every image are warned about."""
    a, out = tmp_path / "a", tmp_path / "s.csv"
    flat_png(a / "x.png", 10), flat_png(a / "y.png", 20)
    score_main(["-i", str(a), "-o", str(out)])
    good = out.read_text()
    out.write_text(good.replace("y.png,20.0,", "y.png,nan,"))
    with pytest.raises(ValueError, match=r"s\.csv line 3 \(y\.png\): niqe 'nan' is not a number"):
        score_main(["-i", str(a), "-o", str(out)])
    out.write_text(good)
    doubled = Normalizer(Prior(("niqe",), (2.0,)), {"niqe": (0.0, 100.0)}, "minmax")  # weights not summing to 1
    with pytest.raises(ValueError, match=r"the scores computed for .*s\.csv must lie in \[0, 1\].*: x\.png has 1\.8"):
        scoring.score_folders([a], out, progress=False, replace=True, normalizer=doubled)
    assert out.read_text() == good
    flat_png(tmp_path / "same" / "p.png", 30), flat_png(tmp_path / "same" / "q.png", 30)
    with pytest.warns(UserWarning, match="all 2 images in .* have the same score 0.5"):
        scoring.score_folders([tmp_path / "same"], tmp_path / "same.csv", progress=False)
