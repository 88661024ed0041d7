"""Card templates shipped with k2v-hub (rendered with huggingface_hub card classes)."""
