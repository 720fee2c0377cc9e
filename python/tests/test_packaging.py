"""What a user checks before installing (issue 19): the installed
distribution's metadata, the typing files shipped inside it, the version
in step with the Rust crate, and a clear ImportError on a platform shmq
does not run on."""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def crate_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    package = text[text.index("[package]") :]
    return re.search(r'^version = "([^"]+)"', package, re.M).group(1)


def test_the_version_is_the_crate_s():
    assert metadata.version("shmq") == crate_version()


def test_metadata_says_what_runs_where():
    meta = metadata.metadata("shmq")
    assert meta["Name"] == "shmq"
    assert meta["Requires-Python"] == ">=3.9"
    lic = meta["License-Expression"] or meta["License"]
    assert "MIT" in lic and "Apache-2.0" in lic, lic
    classifiers = meta.get_all("Classifier")
    assert "Operating System :: POSIX :: Linux" in classifiers
    for minor in range(9, 14):
        assert "Programming Language :: Python :: 3.%d" % minor in classifiers
    assert "pip install shmq" in meta.get_payload() or "pip install shmq" in (meta["Description"] or "")
    extras = meta.get_all("Provides-Extra")
    assert "test" in extras


def test_typing_files_are_inside():
    files = {str(f).replace("\\", "/") for f in metadata.files("shmq")}
    for name in ("shmq/py.typed", "shmq/__init__.pyi", "shmq/_shmq.pyi"):
        assert name in files, sorted(files)


def test_an_unsupported_platform_gets_a_clear_import_error():
    program = "import sys; sys.platform = 'darwin'\ntry:\n    import shmq\nexcept ImportError as e:\n    print(e)\n"
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Linux only" in out.stdout and "'darwin'" in out.stdout, out.stdout
