"""The cockpit: server-rendered pages for people, at `/`.

Every page belongs to one subaccount and is reached through `cockpit_page`, which decides who
may see it (a role in the subaccount, else 404) and who may change it (every POST is a write,
administrators only, else 403) before the view runs. Views read through selectors and write
through the same services the APIs call; they add no rules of their own.
"""
