"""Every console label in English and Chinese; the language comes from ``?lang=`` or a cookie.

One table instead of gettext catalogues: the console has a few hundred words, and keeping
both languages side by side makes a missing translation visible in review.
"""

from __future__ import annotations

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

LABELS: dict[str, tuple[str, str]] = {
    # key: (English, 中文)
    "app": ("idr console", "标识解析控制台"),
    "skip": ("Skip to content", "跳到正文"),
    "nav.dashboard": ("Dashboard", "概览"),
    "nav.resolve": ("Resolve", "解析"),
    "nav.register": ("Register", "注册"),
    "nav.batch": ("Batch upload", "批量导入"),
    "nav.prefixes": ("Prefix applications", "前缀申请"),
    "nav.chain": ("Supply chain", "供应链"),
    "nav.login": ("Log in", "登录"),
    "nav.logout": ("Log out", "退出"),
    "lang.switch": ("中文", "English"),
    "lang.label": ("Language", "语言"),
    "signed_in_as": ("Signed in as", "当前身份"),
    "not_signed_in": ("Not signed in", "未登录"),
    # dashboard
    "dash.title": ("Node overview", "节点概览"),
    "dash.node": ("Node", "节点"),
    "dash.role": ("Role", "角色"),
    "dash.prefixes": ("Prefixes homed here", "本节点前缀"),
    "dash.registered": ("Identifiers registered", "标识注册量"),
    "dash.res_today": ("Resolutions today", "今日解析量"),
    "dash.res_total": ("Resolutions (total)", "累计解析量"),
    "dash.secondary": ("Secondary nodes connected", "接入二级节点"),
    "dash.enterprise": ("Enterprise nodes connected", "接入企业节点"),
    "dash.errors": ("Errors", "错误数"),
    "dash.chart": ("Resolutions per minute (last hour)", "每分钟解析量（近一小时）"),
    "dash.chart_desc": ("Bar chart of resolutions per minute", "每分钟解析量柱状图"),
    "dash.sites": ("Sites", "站点"),
    "dash.site": ("Site", "站点"),
    "dash.site_role": ("Replication role", "复制角色"),
    "dash.epoch": ("Epoch", "任期"),
    "dash.lag": ("Replication lag", "复制延迟"),
    "dash.no_replication": ("Replication is not configured on this node.", "本节点未配置复制。"),
    "dash.map": ("Federation map", "节点拓扑"),
    "dash.map_empty": ("No delegated nodes are known to this node yet.", "本节点尚无下级节点。"),
    "dash.updated": ("Updated", "更新于"),
    "dash.live": ("Figures refresh every few seconds.", "数据每隔几秒自动刷新。"),
    "fed.title": ("Federation statistics", "联网统计"),
    "fed.secondary": ("Secondary nodes connected", "接入二级节点"),
    "fed.enterprise": ("Enterprise nodes", "企业节点"),
    "fed.registered": ("Identifiers registered", "标识注册量"),
    "fed.resolutions": ("Resolutions (total)", "标识解析总量"),
    "fed.unit_secondary": ("", "个"),
    "fed.unit_enterprise": ("", "家"),
    "fed.trend": ("Registrations and resolutions per day", "每日注册量与解析量"),
    "fed.trend_desc": ("Bar chart of resolutions per day", "每日解析量柱状图"),
    "fed.nodes": ("Reporting nodes", "上报节点"),
    "fed.node": ("Node", "节点"),
    "fed.status": ("Reports", "上报状态"),
    "fed.availability": ("Availability", "可用率"),
    "fed.last": ("Last report", "最近上报"),
    "fed.parent": ("Reports to", "上报至"),
    "fed.report_error": ("last report failed", "最近一次上报失败"),
    "report.ok": ("reporting", "上报正常"),
    "report.late": ("reports late", "上报延迟"),
    "report.down": ("down", "离线"),
    "report.self": ("this node", "本节点"),
    "report.unknown": ("unknown", "未知"),
    "report.silent": ("never reported", "未上报"),
    "health.up": ("up", "正常"),
    "health.down": ("unreachable", "不可达"),
    "health.unknown": ("unknown", "未知"),
    "health.self": ("this node", "本节点"),
    "role.top": ("national top-level node", "国家顶级节点"),
    "role.secondary": ("secondary node", "二级节点"),
    "role.enterprise": ("enterprise node", "企业节点"),
    "role.recursive": ("public recursive node", "公共递归节点"),
    "role.standalone": ("standalone node", "独立节点"),
    "primary": ("primary", "主"),
    "mirror": ("mirror", "备"),
    # resolve
    "res.title": ("Resolve an identifier", "标识解析"),
    "res.input": ("Identifier (Handle, GS1, OID or Ecode)", "标识（Handle、GS1、OID 或 Ecode）"),
    "res.hint": (
        "e.g. 88.100/VIN-…, (01)06901234567892, urn:oid:1.2.156…",
        "例如 88.100/VIN-…、(01)06901234567892、urn:oid:1.2.156…",
    ),
    "res.go": ("Resolve", "解析"),
    "res.scheme": ("Recognised as", "识别为"),
    "res.alias": ("is an alias (HS_ALIAS) of", "是以下标识的别名 (HS_ALIAS)"),
    "res.handle": ("Handle", "标识"),
    "res.values": ("Values", "标识值"),
    "res.index": ("Index", "索引"),
    "res.type": ("Type", "类型"),
    "res.data": ("Data", "数据"),
    "res.ttl": ("TTL (s)", "TTL（秒）"),
    "res.timestamp": ("Updated", "更新时间"),
    "res.trace": ("Resolution trace", "解析路径"),
    "res.hop": ("Hop", "跳"),
    "res.server": ("Node", "节点"),
    "res.answer": ("Answer", "应答"),
    "res.latency": ("Latency", "耗时"),
    "res.total": ("Total", "合计"),
    "res.chain": ("Follow its supply chain", "查看供应链"),
    "res.edit": ("Edit", "编辑"),
    "res.admin": ("admin", "管理员"),
    "res.perms": ("permissions", "权限"),
    "res.site": ("site", "站点"),
    "res.servers": ("servers", "服务器"),
    # register
    "reg.title": ("Register an identifier", "注册标识"),
    "reg.edit_title": ("Edit an identifier", "编辑标识"),
    "reg.template": ("Data template", "数据模板"),
    "reg.choose": ("Choose a template", "选择模板"),
    "reg.prefix": ("Prefix", "前缀"),
    "reg.suffix": ("Suffix", "后缀"),
    "reg.handle": ("Identifier", "标识"),
    "reg.required": ("required", "必填"),
    "reg.optional": ("optional", "选填"),
    "reg.url": ("URL (optional)", "URL（选填）"),
    "reg.submit": ("Register", "注册"),
    "reg.save": ("Save", "保存"),
    "reg.ok": ("Registered", "注册成功"),
    "reg.saved": ("Saved", "已保存"),
    "reg.fix": ("Please correct the fields marked below.", "请修改下方标出的字段。"),
    "reg.exists": ("already exists; open it to edit", "已存在；可打开编辑"),
    "reg.no_prefix": (
        "This node homes no prefix, so nothing can be registered here.",
        "本节点没有前缀，无法注册标识。",
    ),
    "reg.login_needed": (
        "Log in with the admin identity to register or edit identifiers.",
        "请使用管理员身份登录后再注册或编辑标识。",
    ),
    # batch
    "batch.title": ("Batch registration from CSV", "CSV 批量注册"),
    "batch.file": ("CSV file", "CSV 文件"),
    "batch.help": (
        "First row: handle, then the template's field names (a column url is optional). "
        "One identifier per line; UTF-8.",
        "第一行为表头：handle，之后是模板字段名（可选 url 列）。每行一个标识，UTF-8 编码。",
    ),
    "batch.start": ("Upload and register", "上传并注册"),
    "batch.progress": ("Progress", "进度"),
    "batch.done": ("Finished", "已完成"),
    "batch.ok": ("registered", "成功"),
    "batch.failed": ("failed", "失败"),
    "batch.report": ("Download the error report (CSV)", "下载错误报告（CSV）"),
    "batch.sample": ("Example header", "表头示例"),
    # login
    "login.title": ("Log in", "登录"),
    "login.identity": ("Admin identity (index:handle)", "管理员身份（索引:标识）"),
    "login.secret": ("Secret key", "密钥"),
    "login.submit": ("Log in", "登录"),
    "login.https_only": (
        "Logging in needs HTTPS: the secret key must not travel unencrypted. "
        "Open this console over the node's HTTPS address.",
        "登录需要 HTTPS：密钥不能以明文传输。请通过节点的 HTTPS 地址打开控制台。",
    ),
    "login.failed": ("Identity or secret key not accepted.", "身份或密钥不正确。"),
    "login.bad_identity": ("An identity looks like 300:0.NA/88.100.", "身份格式如 300:0.NA/88.100。"),
    "chain.time": ("not resolved: the trace's time ran out", "未解析：追溯时间已用完"),
    "chain.busy": ("Too many traces running", "正在进行的追溯过多"),
    "batch.busy": (
        "Your earlier batches are still running: wait for one to finish.",
        "您之前的批量任务仍在运行，请等待其完成。",
    ),
    "login.throttled": (
        "Too many failed attempts: wait a little and try again.",
        "失败次数过多，请稍后再试。",
    ),
    "login.ok": ("Logged in.", "已登录。"),
    "login.out": ("Logged out.", "已退出。"),
    # prefixes
    "pfx.title": ("Prefix applications", "前缀申请"),
    "pfx.apply": ("Apply for an enterprise prefix", "申请企业前缀"),
    "pfx.org": ("Organisation name", "单位名称"),
    "pfx.credit": ("Unified social credit code", "统一社会信用代码"),
    "pfx.contact": ("Contact email", "联系邮箱"),
    "pfx.wanted": ("Requested prefix", "申请的前缀"),
    "pfx.purpose": ("Purpose", "用途"),
    "pfx.submit": ("Submit application", "提交申请"),
    "pfx.submitted": ("Application submitted", "申请已提交"),
    "pfx.queue": ("Review queue", "审核队列"),
    "pfx.empty": ("No applications.", "暂无申请。"),
    "pfx.status": ("Status", "状态"),
    "pfx.filing": ("Filing with the top node", "顶级节点备案"),
    "pfx.reason": ("Reason", "理由"),
    "pfx.approve": ("Approve", "批准"),
    "pfx.reject": ("Reject", "驳回"),
    "pfx.reason_needed": ("A rejection needs a reason.", "驳回需要填写理由。"),
    "pfx.decided": ("Decision recorded", "审核结果已记录"),
    "pfx.id": ("Application", "申请编号"),
    "pfx.submitted_at": ("Submitted", "提交时间"),
    "pfx.actions": ("Decision", "审核"),
    "pfx.reviewer_login": (
        "Applications are shown to their reviewers only: log in with an admin identity of the parent prefix.",
        "申请信息仅对审核人可见：请以上级前缀的管理员身份登录。",
    ),
    "pfx.unavailable": (
        "Prefix applications are handled by the federation module, which this node does not run yet.",
        "前缀申请由联邦模块处理，本节点尚未启用。",
    ),
    "status.pending": ("pending review", "待审核"),
    "status.approved": ("approved", "已批准"),
    "status.rejected": ("rejected", "已驳回"),
    "status.filed": ("filed", "已备案"),
    "status.not_filed": ("not filed", "未备案"),
    "status.filing_failed": ("filing failed", "备案失败"),
    # supply chain
    "chain.title": ("Supply chain", "供应链追溯"),
    "chain.input": ("Identifier of a vehicle, pack or part", "整车、电池包或零部件的标识"),
    "chain.go": ("Show", "查看"),
    "chain.via": ("via", "经由"),
    "chain.missing": ("not resolvable", "无法解析"),
    "chain.cycle": ("already shown above", "已在上方出现"),
    "chain.truncated": ("more links not shown", "更多链接未显示"),
    "chain.nodes": ("identifiers", "个标识"),
    # errors / misc
    "err.title": ("Something is wrong", "出错了"),
    "err.csrf": (
        "The form expired or did not come from this console. Reload the page and try again.",
        "表单已过期或来源无效，请刷新页面后重试。",
    ),
    "err.not_found": ("Not found", "未找到"),
    "err.login": ("Log in first.", "请先登录。"),
    "back": ("Back", "返回"),
    "ms": ("ms", "毫秒"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
}


def pick_lang(query: str | None, cookie: str | None, accept: str | None) -> str:
    """``?lang=`` wins, then the cookie, then the browser's first listed language."""
    for cand in (query, cookie):
        if cand in LANGS:
            return cand
    if accept:
        first = accept.split(",")[0].strip().lower()
        if first.startswith("en"):
            return "en"
    return DEFAULT_LANG


def translate(lang: str, key: str) -> str:
    en, zh = LABELS.get(key, (key, key))
    return en if lang == "en" else zh
