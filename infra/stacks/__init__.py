"""One stack per deployable unit; each composes building blocks and grants access between them."""
