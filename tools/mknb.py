"""Write a Jupyter notebook (no outputs) from a plain-text source: cells separated by lines '# %%' (code) or
'# %% [markdown]' (markdown), the jupytext 'percent' format.  Optional cell tags: '# %% tags=["a", "b"]'.

    python tools/mknb.py book/src/quickstart.py book/quickstart.ipynb

The .py sources are not kept: the notebooks are the source of truth; this only saves typing JSON by hand.
"""
import json
import re
import sys

import nbformat


def convert(text: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for block in re.split(r"^# %%", text, flags=re.M)[1:]:
        header, _, body = block.partition("\n")
        tags = json.loads(m.group(1)) if (m := re.search(r"tags=(\[.*\])", header)) else []
        body = body.strip("\n")
        if "[markdown]" in header:
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


if __name__ == "__main__":
    nbformat.write(convert(open(sys.argv[1]).read()), sys.argv[2])
