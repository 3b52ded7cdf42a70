"""The web home: the community's gallery, rating in the browser, moderation and the
maintainers' figures, behind Discord login (``dreamrate web``)."""
