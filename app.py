"""rotviz app: `streamlit run app.py` from a checkout (`rotviz app` once installed).

A router over the pages in pages/; rotviz.app.navigation lists them.
"""

from rotviz.app.navigation import run

run()
