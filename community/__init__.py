"""The community's use cases: what a member or a moderator may do, each rule written once.

Between the stages (generation, ratings, aesthetic) and the shells that face people (the
bot, the web home, the command line). Nothing here imports discord or starlette: an adapter
turns a click, a command or a form into one call here, and the answer into a message or a
page.
"""
