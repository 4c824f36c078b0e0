"""The README's commands and Python examples are the ones that work."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def test_first_lines_are_the_two_commands_and_ci_runs_them():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    install, test = block[1].split(" && ")
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert install == 'pip install -e ".[dev]"' and 'pip install -q -e ".[dev]"' in ci
    assert test == "python -m pytest" and "\npython3 -m pytest" in ci


def test_python_examples_run():
    """Blocks fenced as ```python run here; ```py marks cluster-only snippets."""
    for code in re.findall(r"```python\n(.*?)```", README, re.S):
        exec(compile(code, "README.md", "exec"), {})
