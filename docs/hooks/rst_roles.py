"""MkDocs hook: the docstrings use Sphinx roles (:func:`odeint`, :class:`~pyode.nn.CNF`), which Markdown
renders as ``:func:<code>odeint</code>``; drop the role (and Sphinx's ``~`` prefix) and keep the code span."""

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):<code>~?")


def on_page_content(html, **kwargs):
    return _ROLE.sub("<code>", html)
