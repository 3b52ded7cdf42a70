"""The ground floor: settings, the error root, the atomic writer, devices and logging.

Everything in dreamrate may import these modules; they import nothing else of dreamrate.
"""
