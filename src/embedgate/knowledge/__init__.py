"""The knowledge base: parse, chunk, embed, store in Milvus, hybrid search."""
