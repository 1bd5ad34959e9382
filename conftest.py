pytest_plugins = ["meshsite.testing"]
