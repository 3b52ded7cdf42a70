"""What leaves the database for others to use: ``ratings export`` and ``comparisons export``
in the one rating and choice schemas, and the community's shareable dataset."""
