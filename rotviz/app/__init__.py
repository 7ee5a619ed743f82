"""The only Streamlit-aware code: cached wrappers, shared widgets, background jobs, exports.

Pages (app.py, pages/) call these and the core; nothing else in rotviz imports streamlit.
"""
