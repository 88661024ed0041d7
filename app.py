"""k2v-hub as a Hugging Face Space: ``python app.py`` serves the web app of ``k2v-hub app``.

Settings come from the environment: ``K2V_INDEX`` (required: an index folder or Hub dataset id), ``K2V_RETRIEVER``,
``K2V_ZOO`` and ``HF_TOKEN`` (a Space secret). A Space sets ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``; elsewhere
the app listens on 127.0.0.1:7860. The Space needs ``k2v-hub[app]`` in its requirements.
"""

from k2v_hub.app import serve_from_environment

if __name__ == "__main__":
    serve_from_environment()
