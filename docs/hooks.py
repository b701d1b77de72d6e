"""MkDocs hooks (mkdocs.yml `hooks:`): the config reference's table generated from the code at
build time, so the site cannot drift from it."""

MARKER = "<!-- gptcli: config-reference -->"


def on_page_markdown(markdown: str, **_) -> str:
    if MARKER not in markdown:
        return markdown
    from gptcli.config_reference import markdown as reference
    from gptcli.model import choices

    return markdown.replace(MARKER, reference(choices()))
