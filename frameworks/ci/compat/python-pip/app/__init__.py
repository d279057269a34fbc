def slugify(text):
    return "-".join(text.lower().split())


def add(a, b):
    return a + b
