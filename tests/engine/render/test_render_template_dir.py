"""Reading template folders: every structural problem names the file at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import TemplateInvalid
from engine.render import TemplateSource, load_template_dir, read_template

TOML = 'name = "Welcome"\nversion = 3\nsubject = "Hi {{ contact.first_name }}"\n'


def make(root: Path, template_id: str, files: dict[str, str | bytes]) -> Path:
    folder = root / template_id
    folder.mkdir(parents=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def test_reads_every_field(tmp_path: Path) -> None:
    toml = TOML + 'format = "html"\nfrom = "Shop <hi@shop.example>"\npreheader = "Psst"\n'
    make(tmp_path, "welcome", {"template.toml": toml, "body.html": "<p>Hi</p>", "body.txt": "Hi"})
    make(tmp_path, "another", {"template.toml": TOML, "body.mjml": "<mjml></mjml>"})
    make(tmp_path, ".hidden", {"junk": "x"})
    make(tmp_path, "_drafts", {"junk": "x"})
    (tmp_path / "README.md").write_text("not a template")
    sources = load_template_dir(tmp_path)
    assert [s.id for s in sources] == ["another", "welcome"]
    assert sources[1] == TemplateSource(
        id="welcome",
        version=3,
        name="Welcome",
        subject="Hi {{ contact.first_name }}",
        body="<p>Hi</p>",
        format="html",
        text="Hi",
        from_address="Shop <hi@shop.example>",
        preheader="Psst",
    )
    assert sources[0].format == "mjml" and sources[0].text is None
    assert sources[0].from_address is None and sources[0].preheader is None


@pytest.mark.parametrize(
    ("files", "culprit", "message"),
    [
        ({"body.html": "x"}, "template.toml", "missing"),
        ({"template.toml": "name = ", "body.html": "x"}, "template.toml", "Invalid value"),
        ({"template.toml": TOML + "colour = 1\n", "body.html": "x"}, "template.toml", "'colour'"),
        (
            {"template.toml": 'name = "x"\nversion = 1\n', "body.html": "x"},
            "template.toml",
            "'subject'",
        ),
        ({"template.toml": TOML.replace("3", '"3"'), "body.html": "x"}, "template.toml", "int"),
        ({"template.toml": TOML.replace("3", "true"), "body.html": "x"}, "template.toml", "int"),
        ({"template.toml": TOML.replace("3", "0"), "body.html": "x"}, "template.toml", "1 or more"),
        ({"template.toml": TOML}, "", "no body.html or body.mjml"),
        ({"template.toml": TOML, "body.html": "x", "body.mjml": "y"}, "", "both"),
        (
            {"template.toml": TOML + 'format = "mjml"\n', "body.html": "x"},
            "template.toml",
            "format 'mjml' but",
        ),
        ({"template.toml": TOML, "body.html": b"\xff\xfe<p>"}, "body.html", "not UTF-8"),
        ({"template.toml": TOML, "body.html": "x", "body.txt": b"\x80"}, "body.txt", "not UTF-8"),
    ],
)
def test_errors_name_the_file(
    tmp_path: Path, files: dict[str, str | bytes], culprit: str, message: str
) -> None:
    folder = make(tmp_path, "broken", files)
    with pytest.raises(TemplateInvalid, match=message) as info:
        load_template_dir(tmp_path)
    assert str(info.value).startswith(str(folder / culprit) if culprit else str(folder))


def test_folder_names_must_be_template_ids(tmp_path: Path) -> None:
    make(tmp_path, "Bad Name", {"template.toml": TOML, "body.html": "x"})
    with pytest.raises(TemplateInvalid, match="Bad Name: a template id is lowercase"):
        load_template_dir(tmp_path)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(TemplateInvalid, match="not a directory"):
        load_template_dir(tmp_path / "missing")
    folder = make(tmp_path, "one", {"template.toml": TOML, "body.html": "<p>x</p>"})
    assert read_template(folder).id == "one"
