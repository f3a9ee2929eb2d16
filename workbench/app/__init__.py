"""The Streamlit app (the only package that imports streamlit): participant flow, logins, researcher console."""
