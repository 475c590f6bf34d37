"""The app floor: the `semhint` command line (``cli``) and one module per command. The only floor that
parses arguments, prints for people and exits; nothing below it imports it.
"""
