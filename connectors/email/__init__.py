"""E-mail: rendering sequence templates, building messages, and handing them over."""
