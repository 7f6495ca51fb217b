"""mkdocs hook: lesion's docstrings cross-reference in Sphinx's style (:func:`name`); mkdocstrings
renders the role as text before the code span, so the API page drops it and keeps the name."""
import re

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc):(<code>)~?")


def on_page_content(html, **kwargs):
    return ROLE.sub(r"\1", html)
