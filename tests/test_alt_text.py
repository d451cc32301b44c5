"""Alt-text fusion: the input's web alt-text enters as a proposal, its claims are checked like
any other, and its names survive only as labels (or not at all). Scripted backends stand on the
far side of the role boundary; the LLM reads the prompt it is given, so what reaches it
matters. The tiny preset runs it end to end from every input kind."""

from __future__ import annotations

import io
import json
import re
import tarfile

import pytest
from PIL import Image

from factcap.cli import main
from factcap.config import load_config
from factcap.engine.records import read_records
from factcap.inputs import InputItem
from factcap.pipeline import Pipeline
from factcap.pipeline.claims import ALT_TEXT_NOTE
from factcap.pipeline.models import Models
from scripted import ScriptedCaptioner, ScriptedDetector, ScriptedLLM, ScriptedOCR, ScriptedVQA

NOUNS = ("cat", "sofa", "dog", "tower", "bridge", "shoe")
DRAFT = re.compile(r'^\[\d+\] from ([^:]+): "(.*)"$', re.M)


def claims_from_prompt(prompt: str) -> str:
    """What a careful LLM would answer: an object claim for each known noun in the drafts and,
    only when the prompt explains alt-text, a name claim for each capitalised name in it."""
    claims, seen = [], set()
    for model, text in DRAFT.findall(prompt):
        for noun in NOUNS:
            if re.search(rf"\b{noun}s?\b", text, re.I) and noun not in seen:
                seen.add(noun)
                claims.append({"kind": "object", "text": f"There is a {noun}.", "subject": noun})
        if model == "alt_text" and ALT_TEXT_NOTE.strip() in prompt:
            for name in re.findall(r"\b(?:[A-Z][a-z]+ )*[A-Z][a-z]+(?: [A-Z][a-z]+)+\b", text):
                claims.append({"kind": "name", "text": f"It is {name}.", "subject": name})
    return json.dumps(claims)


def make(caption, ocr_texts=None, **overrides):
    config = load_config(preset="tiny", overrides=overrides)
    llm = ScriptedLLM(claims_from_prompt, caption)
    built = {
        "captioner:0": (ScriptedCaptioner("cap-a", "A grey cat sleeps on a sofa."), 4),
        "captioner:1": (ScriptedCaptioner("cap-b", "A cat on a sofa near a tower."), 4),
        "llm": (llm, 4),
        "detector": (ScriptedDetector(["cat", "sofa", "tower"]), 4),
        "vqa": (ScriptedVQA(lambda q: 0.5), 4),
    }
    if ocr_texts is not None:
        built["ocr"] = (ScriptedOCR(ocr_texts), 4)
    return Pipeline(config, models=Models(config, built=built)), llm


def item(alt: str | None, key: str = "alt_text") -> InputItem:
    extra = {} if alt is None else {key: alt}
    return InputItem("mem.png", "id-1", image=Image.new("RGB", (64, 48), "grey"), extra=extra)


def prompts_of(llm, marker: str) -> list[str]:
    return [c[0]["content"] for call in llm.calls for c in call if marker in c[0]["content"]]


def test_right_alt_text_adds_its_name_as_a_label_and_its_objects_are_checked():
    pipeline, llm = make("A grey cat on a sofa, labelled as Eiffel Tower. It is Eiffel Tower.")
    [record] = pipeline.process([item("Cat on a sofa below the Eiffel Tower in Paris")])
    assert record.proposals[-1].model == "alt_text"
    assert record.proposals[-1].text == "Cat on a sofa below the Eiffel Tower in Paris"
    claims = {c.subject: c for c in record.claims}
    assert claims["cat"].verdict == "supported" and claims["cat"].origin is None
    assert claims["tower"].verdict == "supported" and claims["tower"].origin is None
    name = claims["eiffel tower"]
    assert name.kind == "name" and name.origin == "alt_text" and name.verdict == "uncertain"
    assert "no checker can confirm" in name.evidence["checker"]
    assert name.score is None and "vqa_p_yes" not in name.evidence  # the VQA model is not asked
    [compose_prompt] = prompts_of(llm, "verified facts")
    assert 'ALT-TEXT LABEL: "It is Eiffel Tower."' in compose_prompt
    assert "labelled as" in compose_prompt and "alt_text" in compose_prompt
    # the label stays; the sentence stating the name as seen is cut, and the record says so
    assert record.captions["detailed"] == "A grey cat on a sofa, labelled as Eiffel Tower."
    assert any("cut unconfirmed alt-text names" in n for n in record.notes)


def test_wrong_alt_text_its_missing_object_is_refuted_and_cut():
    pipeline, _ = make("A grey cat on a sofa. A dog sleeps beside it.")
    [record] = pipeline.process([item("A dog and a cat on a sofa")])
    dog = next(c for c in record.claims if c.subject == "dog")
    assert dog.origin == "alt_text" and dog.verdict == "refuted"
    assert record.captions["detailed"] == "A grey cat on a sofa."
    assert "There is a dog." in record.removed
    assert not any("unrelated" in n for n in record.notes)  # its cat and sofa are there


def test_unrelated_alt_text_loses_its_names_and_says_why():
    pipeline, llm = make("A grey cat on a sofa. Labelled as Nike Air Max.")
    [record] = pipeline.process([item("Nike Air Max shoes, buy online with free delivery")])
    shoe = next(c for c in record.claims if c.subject == "shoe")
    assert shoe.origin == "alt_text" and shoe.verdict == "refuted"
    name = next(c for c in record.claims if c.kind == "name")
    assert name.subject == "nike air max" and name.verdict == "uncertain"
    assert record.captions["detailed"] == "A grey cat on a sofa."
    assert any("looks unrelated" in n for n in record.notes)
    [compose_prompt] = prompts_of(llm, "verified facts")
    assert "Nike" not in compose_prompt and "ALT-TEXT LABEL" not in compose_prompt


def test_drop_switch_leaves_names_out_of_the_prompt_and_the_caption():
    pipeline, llm = make(
        "A grey cat on a sofa, labelled as Eiffel Tower.",
        alt_text={"unconfirmed_names": "drop"},
    )
    [record] = pipeline.process([item("Cat on a sofa below the Eiffel Tower")])
    [compose_prompt] = prompts_of(llm, "verified facts")
    assert "Eiffel" not in compose_prompt and "alt_text" not in compose_prompt
    # the only sentence named it: cut, so the fallback from the captioners' drafts is used
    assert (
        record.captions["detailed"] == "A grey cat sleeps on a sofa. A cat on a sofa near a tower."
    )
    assert any("cut unconfirmed alt-text names" in n for n in record.notes)


def test_ocr_reading_the_name_confirms_it():
    pipeline, llm = make("A cat by the Eiffel Tower.", ocr_texts=["EIFFEL TOWER"])
    [record] = pipeline.process([item("Cat near the Eiffel Tower")])
    name = next(c for c in record.claims if c.kind == "name")
    assert name.verdict == "supported" and name.evidence["ocr_match"] == "EIFFEL TOWER"
    assert record.captions["detailed"] == "A cat by the Eiffel Tower."  # confirmed: no label needed


def test_no_alt_text_leaves_the_prompt_as_before_and_the_field_is_configurable():
    pipeline, llm = make("A grey cat on a sofa.")
    [plain] = pipeline.process([item(None)])
    assert [p.model for p in plain.proposals] == ["cap-a", "cap-b"]
    [claims_prompt] = prompts_of(llm, "checkable claims")
    assert "alt-text" not in claims_prompt and all(c.origin is None for c in plain.claims)
    # another field name, read from a tar sample's .json member
    pipeline, llm = make("A grey cat on a sofa.", alt_text={"field": "caption"})
    work = item(None)
    work.extra = {"json": {"caption": "A cat on the Golden Gate Bridge"}}
    [record] = pipeline.process([work])
    assert record.proposals[-1].text == "A cat on the Golden Gate Bridge"
    [claims_prompt] = prompts_of(llm, "checkable claims")
    assert ALT_TEXT_NOTE.strip() in claims_prompt
    assert claims_prompt.index("The caption from alt_text") > claims_prompt.index("<data>")
    # switched off: the field is ignored
    pipeline, _ = make("A grey cat on a sofa.", alt_text={"field": None})
    [record] = pipeline.process([item("Cat below the Eiffel Tower")])
    assert "alt_text" not in [p.model for p in record.proposals]


def test_fused_style_is_one_sentence_with_the_label():
    pipeline, llm = make("A grey cat sits on a sofa, labelled as Eiffel Tower. More text here.")
    [record] = pipeline.process([item("Cat on a sofa below the Eiffel Tower")], styles=["fused"])
    [compose_prompt] = prompts_of(llm, "verified facts")
    assert "merges what the image's alt-text knows" in compose_prompt
    assert "fused" in record.captions


# --- the tiny preset, end to end, from every input kind ---------------------------------------


def _png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, "PNG")
    return buffer.getvalue()


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_tiny_preset_reads_alt_text_from_manifest_tar_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "a.png").write_bytes(_png("red"))
    manifest = tmp_path / "pages.jsonl"
    manifest.write_text(json.dumps({"path": "a.png", "id": "m1", "alt_text": "Red Square"}) + "\n")
    shard = tmp_path / "shard.tar"
    _tar(
        shard,
        [
            ("s1.png", _png("blue")),
            ("s1.json", json.dumps({"alt_text": "Blue Mosque at night"}).encode()),
            ("s2.png", _png("green")),
        ],
    )
    table = pa.table({"image": [_png("white")], "id": ["p1"], "alt_text": ["White House lawn"]})
    pq.write_table(table, tmp_path / "rows.parquet")
    out = tmp_path / "out.jsonl"
    args = [str(manifest), str(shard), str(tmp_path / "rows.parquet"), "-o", str(out)]
    code = main(["caption", *args, "--style", "fused", "--quiet"])
    assert code == 0
    records = {r["source"].rsplit("/", 1)[-1]: r for r in read_records(out)}
    alt = {
        k: [p["text"] for p in r["proposals"] if p["model"] == "alt_text"]
        for k, r in records.items()
    }
    assert sorted(map(tuple, alt.values())) == [
        (),
        ("Blue Mosque at night",),
        ("Red Square",),
        ("White House lawn",),
    ]
    assert all(r["status"] == "ok" and r["captions"]["fused"] for r in records.values())
    # a tar's .txt member through --alt-text-field txt
    _tar(tmp_path / "t.tar", [("k.png", _png("red")), ("k.txt", b"Tower Bridge, London")])
    out2 = tmp_path / "out2.jsonl"
    code = main(
        ["caption", str(tmp_path / "t.tar"), "-o", str(out2), "--alt-text-field", "txt", "--quiet"]
    )
    assert code == 0
    [record] = list(read_records(out2))
    assert record["proposals"][-1] == {"model": "alt_text", "text": "Tower Bridge, London"}


def test_alt_text_flags_are_checked_before_models_load(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(_png("red"))
    out = str(tmp_path / "o.jsonl")
    code = main(
        ["caption", str(tmp_path / "a.png"), "-o", out, "--no-alt-text", "--alt-text-field", "x"]
    )
    assert code == 2 and "exclude each other" in capsys.readouterr().err
    code = main(["caption", str(tmp_path / "a.png"), "-o", out, "--keep-top", "2"])
    assert code == 2 and "need --rank-by" in capsys.readouterr().err
