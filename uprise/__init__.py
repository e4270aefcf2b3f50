"""The `uprise` command: one dispatcher over the stage CLIs, the evaluation and the quickstart."""
