"""MkDocs hooks (mkdocs.yml `hooks:`): parts of pages generated from the code at build time, so
the site cannot drift from it."""

MARKERS = {
    "<!-- gptcli: config-reference -->": "config_reference",
}


def config_reference() -> str:
    from gptcli.config_reference import markdown
    from gptcli.model import choices

    return markdown(choices())


def on_page_markdown(markdown: str, **_) -> str:
    for marker, name in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, globals()[name]())
    return markdown
