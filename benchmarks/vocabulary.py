"""Words the benchmarks make their synthetic documents and queries of: enterprise terms in
English and in Chinese (the Chinese ones are single dictionary words for the analyzer)."""

WORDS_EN = [
    *[
        "policy",
        "employee",
        "travel",
        "security",
        "data",
        "model",
        "search",
        "vector",
        "invoice",
        "backup",
        "network",
    ],
    *[
        "contract",
        "review",
        "approval",
        "incident",
        "training",
        "budget",
        "report",
        "customer",
        "supplier",
    ],
    *[
        "quality",
        "leave",
        "salary",
        "access",
        "password",
        "laptop",
        "meeting",
        "office",
        "release",
        "support",
    ],
]
WORDS_ZH = [
    *[
        "机器",
        "学习",
        "检索",
        "文档",
        "向量",
        "数据",
        "模型",
        "安全",
        "企业",
        "服务",
        "合同",
        "审批",
        "预算",
        "报告",
        "客户",
    ],
    *[
        "年假",
        "内网",
        "报销",
        "发票",
        "采购",
        "权限",
        "密码",
        "会议",
        "工单",
        "培训",
        "考勤",
        "绩效",
        "供应商",
        "备份",
        "网络",
    ],
]

# Frequent English words, retrieval terms and Chinese words: texts that tokenise like prose
# (throughput corpora of a given token length are cut from these).
# fmt: off
PROSE_WORDS = [
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by",
    "at", "from", "his", "an", "were", "are", "which", "this", "be", "has", "had", "one",
    "their", "its", "new", "after", "who", "first", "also", "two", "been", "they", "have",
    "her", "more", "she", "other", "time", "would", "some", "these", "many", "most", "only",
    "over", "such", "into", "than", "when", "people", "city", "world", "state", "system",
    "company", "government", "embedding", "retrieval", "passage", "document", "vector",
    "search", "query", "language", "model", "service", "security", "enterprise",
    "knowledge", "database", "network", "private", "cluster",
    "财务", "法律", "医疗", "机器", "学习", "检索", "文档", "向量",
    "搜索", "知识", "数据", "模型", "安全", "企业", "服务",
]
# fmt: on
